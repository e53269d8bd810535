"""Nothing lost, nothing rewritten, nothing moved by accident: one process per run directory, a run's record kept as
it was started, export that never deletes, a full disk while checkpointing, W&B without a network."""

import errno
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_cli, small_trainer

from mindprint.engine import checkpoint
from mindprint.errors import TrainingStopped
from mindprint.export import MARKER
from mindprint.export import main as export_main
from mindprint.records import read_metrics

SMOKE = ["+experiment=smoke"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # two processes on 2 cores


def one_line(proc, code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def snapshot(run_dir) -> dict:
    """Every file's bytes, but the lock's (it names whichever process holds or last held the directory)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_resume_after_sigkill_is_not(tmp_path, tiny):
    run_dir = tmp_path / "run"
    args = [*SMOKE, "ppo.steps=400", "checkpoint.every=1", f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen([sys.executable, "-m", "mindprint.run", *args], cwd=REPO, env=ONE_THREAD,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (run_dir / "metrics.jsonl").exists() or len(read_metrics(run_dir / "metrics.jsonl")) < 2:
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.05)
        record = (run_dir / ".hydra" / "config.yaml").read_bytes()
        second = run_cli(*args, "resume=true", env=ONE_THREAD)
        message = one_line(second)
        assert message == (f"error: hydra.run.dir='{run_dir}' is not allowed: it is in use by host "
                           f"{os.uname().nodename}, pid {first.pid} (one process per run directory: wait for it to end, "
                           "or choose another directory)")
        assert first.poll() is None  # the first run goes on
        assert (run_dir / ".hydra" / "config.yaml").read_bytes() == record
    finally:
        first.kill()
        first.wait()
    done = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("iter-*"))
    third = run_cli(*SMOKE, f"ppo.steps={done + 2}", "checkpoint.every=1", f"hydra.run.dir={run_dir}", "resume=true",
                    env=ONE_THREAD)
    assert third.returncode == 0, third.stderr[-2000:]  # the killed run left no lock behind
    iterations = [m["iteration"] for m in read_metrics(run_dir / "metrics.jsonl")]
    assert iterations == list(range(1, done + 3))  # none twice, none lost


@pytest.mark.slow
def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, tiny):
    run_dir = tmp_path / "run"
    proc = run_cli(*SMOKE, "checkpoint.every=2", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = snapshot(run_dir)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"} <= set(before)
    assert not any(name.endswith(".log") for name in before)  # no job log written into the directory
    refused = run_cli(*SMOKE, "checkpoint.every=2", "algo=grpo", f"hydra.run.dir={run_dir}", "resume=true")
    assert "algo.name: 'ppo' → 'grpo'" in one_line(refused)
    assert snapshot(run_dir) == before  # the record, the metrics and every checkpoint byte for byte
    accepted = run_cli(*SMOKE, "checkpoint.every=2", "ppo.steps=3", f"hydra.run.dir={run_dir}", "resume=true")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert snapshot(run_dir)[".hydra/overrides.yaml"] == before[".hydra/overrides.yaml"]  # what it was started with


@pytest.mark.slow
def test_wandb_without_a_network_logs_offline_and_says_how_to_sync(tmp_path, tiny):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}  # nothing chosen: wandb's default, online
    env["WANDB_BASE_URL"] = "http://127.0.0.1:9"  # the discard port: nothing listens, as on a node without network
    run_dir = tmp_path / "run"
    proc = run_cli(*SMOKE, "logger=wandb", f"hydra.run.dir={run_dir}", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("wandb:")]  # wandb's own summary
    assert ours == [f"warning: W&B is out of reach (127.0.0.1:9: Connection refused): logging offline under "
                    f"{run_dir / 'wandb'}; upload later with: wandb sync {run_dir / 'wandb'}/offline-run-*"]
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    online = run_cli(*SMOKE, "logger=wandb", "logger.mode=online", f"hydra.run.dir={tmp_path / 'online'}", env=env)
    assert one_line(online).startswith("error: logger.mode='online' is not allowed here: W&B is out of reach")
    assert not (tmp_path / "online").exists()


@pytest.mark.slow
def test_train_reward_never_writes_over_a_reward_model(tmp_path, tiny):
    run_dir = tmp_path / "rm"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "config.json").write_text("{}")
    proc = run_cli("model=tiny", "pairs.name=/no/matter.jsonl", f"hydra.run.dir={run_dir}",
                   module="mindprint.train_reward")
    assert one_line(proc) == (f"error: hydra.run.dir='{run_dir}' is not allowed: it already holds a reward model "
                              "(model/, eval.json); choose another directory")
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "model"]  # its record was never written either
    assert (run_dir / "model" / "config.json").read_text() == "{}"


@pytest.fixture
def finished_run(tmp_path, tiny):
    trainer = small_trainer(tmp_path / "run", "ppo.steps=1")
    trainer.train(progress=False)
    return tmp_path / "run"


def export_fails(capsys, *args, code=2) -> str:
    with pytest.raises(SystemExit) as info:
        export_main([str(a) for a in args])
    assert info.value.code == code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_export_never_deletes_what_it_did_not_write(finished_run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert "it is not empty (notes.txt) and not an export of mindprint" in export_fails(capsys, finished_run, mine)
    assert sorted(os.listdir(mine)) == ["notes.txt"] and (mine / "notes.txt").read_text() == "my notes"
    assert "and not an export of mindprint" in export_fails(capsys, finished_run, mine, "--force")  # not ours either
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "it is a file" in export_fails(capsys, finished_run, a_file)
    assert sorted(os.listdir(tmp_path)) == ["a_file", "mine", "run"]  # no .tmp left anywhere
    assert "could not be written" in export_fails(capsys, finished_run, "/proc/mindprint-nowhere/out", code=1)

    out = tmp_path / "exported" / "adapter"  # parents made as needed
    export_main([str(finished_run), str(out)])
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir makes a folder, not owner-only
    written = json.loads((out / MARKER).read_text())["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(written)
    assert "holds a previous export; add --force" in export_fails(capsys, finished_run, out)
    export_main([str(finished_run), str(out), "--force"])  # a previous export of mindprint: replaced
    (out / "notes.txt").write_text("mine now")
    assert "besides a previous export it holds notes.txt" in export_fails(capsys, finished_run, out, "--force")
    assert (out / "notes.txt").read_text() == "mine now"
    assert [p.name for p in (tmp_path / "exported").iterdir()] == ["adapter"]


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    # how torch.save's own writer reports a full disk
    (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: file "
                  "write failed"), "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing"),
])
def test_a_full_disk_while_checkpointing_removes_the_half_written_one_and_keeps_the_last(tmp_path, tiny, monkeypatch,
                                                                                         error, reason):
    trainer = small_trainer(tmp_path, "ppo.steps=1")
    trainer.iteration = 1
    good = trainer.checkpoint()
    trainer.iteration = 2
    real = checkpoint.save_state

    def full_disk(state, file):
        if file.name == checkpoint.STATE:  # the process file went through; the shared state finds the disk full
            raise error
        real(state, file)

    monkeypatch.setattr(checkpoint, "save_state", full_disk)
    with pytest.raises(TrainingStopped) as info:
        trainer.checkpoint()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint iter-000002 was not written to {tmp_path / 'checkpoints'}: {reason}")
    assert message.endswith("needed); the previous checkpoint, iter-000001, is intact")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["iter-000001"]  # no .tmp-iter-000002
    checkpoint.verify(good, hash_limit=None)
