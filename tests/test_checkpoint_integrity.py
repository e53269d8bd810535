"""A checkpoint damaged on disk (a crash while copying a run, a full disk) is skipped for the newest intact one,
in one warning line; none intact is one error line (issue 16). A refused file is still refused, never skipped."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from safetensors.torch import save_file
from test_checkpoint_safety import Planted

from mindprint.engine import checkpoint
from mindprint.engine.checkpoint import CheckpointDamaged, CheckpointRefused

SMOKE = ["+experiment=smoke", "checkpoint.every=1"]  # 2 iterations, a checkpoint after each
ADAPTER = f"adapter/{checkpoint.ADAPTER_WEIGHTS}"
SMALL_FILES = [checkpoint.STATE, "process-0.pt", ADAPTER, "adapter/adapter_config.json", checkpoint.VALUE_WEIGHTS]


def fake_checkpoint(run_dir: Path, iteration: int, keep: int = 5, critic: bool = True) -> Path:
    """A small checkpoint with every kind of file, committed as the trainer commits one."""
    tmp = checkpoint.begin(run_dir, iteration, create=True)
    checkpoint.save_state({"sampler": {"seen": iteration}, "rng": torch.arange(100)}, tmp / checkpoint.process_file(0))

    def adapter_saver(directory: Path) -> None:
        directory.mkdir()
        (directory / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
        weights = {"lora_A": torch.randn(8, 64), "lora_B": torch.randn(64, 8)}
        save_file(weights, str(directory / checkpoint.ADAPTER_WEIGHTS))

    state = {"iteration": iteration, "num_processes": 1, "optimizer": {"exp_avg": torch.randn(4096)},
             "config": {"algo": {"name": "ppo" if critic else "grpo"}}}
    value = {"score.weight": torch.randn(1, 2048)} if critic else None
    return checkpoint.commit(tmp, adapter_saver, value, state, keep)


def cut(file: Path, keep: float = 0.5) -> tuple[int, int]:
    """Cut `file` short as a crash or a full disk does: (its size now, its size before)."""
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])
    return int(len(data) * keep), len(data)


def damage_of(path: Path, **kwargs) -> str:
    with pytest.raises(CheckpointDamaged) as info:
        checkpoint.verify(path, **kwargs)
    assert "\n" not in str(info.value)
    return info.value.reason


# ------------------------------------------------------------------ the manifest


def test_commit_writes_the_size_and_hash_of_every_file(tmp_path):
    path = fake_checkpoint(tmp_path, 1)
    files = json.loads((path / checkpoint.MANIFEST).read_text())["files"]
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert sorted(files) == sorted(set(on_disk) - {checkpoint.MANIFEST}) and set(SMALL_FILES) <= set(files)
    for rel, entry in files.items():
        assert entry["size"] == (path / rel).stat().st_size
        assert entry["sha256"] == checkpoint._digest(path / rel)
    assert checkpoint.verify(path)["iteration"] == 1
    assert checkpoint.load_state(path)["manifest"] == checkpoint.MANIFEST


@pytest.mark.parametrize("rel", SMALL_FILES)
def test_a_file_cut_short_is_named_with_its_size_and_the_manifests(tmp_path, rel):
    path = fake_checkpoint(tmp_path, 1)
    now, before = cut(path / rel)
    reason = damage_of(path)
    print(reason)
    assert reason == f"{rel}: {now:,} bytes, expected {before:,}"


@pytest.mark.parametrize("rel", SMALL_FILES)
def test_a_missing_file_is_named(tmp_path, rel):
    path = fake_checkpoint(tmp_path, 1)
    (path / rel).unlink()
    assert damage_of(path) == f"{rel}: missing"


def test_a_lost_manifest_is_missed(tmp_path):
    path = fake_checkpoint(tmp_path, 1)
    (path / checkpoint.MANIFEST).unlink()  # a copy that stopped before it
    assert damage_of(path) == "manifest.json: missing"


def test_wrong_bytes_of_the_right_size_are_found_by_the_hash_up_to_the_limit(tmp_path):
    path = fake_checkpoint(tmp_path, 1)
    file = path / checkpoint.VALUE_WEIGHTS
    data = bytearray(file.read_bytes())
    data[-5] ^= 0xFF  # in the tensor data: the safetensors header still reads
    file.write_bytes(bytes(data))
    assert damage_of(path) == f"{checkpoint.VALUE_WEIGHTS}: its sha256 differs from the manifest's"
    checkpoint.verify(path, hash_limit=len(data) - 1)  # a file bigger than the limit: its size alone is checked


def test_a_checkpoint_from_before_manifests_is_checked_by_its_structure(tmp_path):
    path = fake_checkpoint(tmp_path, 1)
    (path / checkpoint.MANIFEST).unlink()
    state = checkpoint.load_state(path)
    del state["manifest"], state["format"]
    checkpoint.save_state(state, path / checkpoint.STATE)  # as written before manifests
    assert checkpoint.verify(path)["iteration"] == 1
    for rel in (checkpoint.VALUE_WEIGHTS, "process-0.pt"):
        now, _ = cut(path / rel, 0.9)
        assert damage_of(path) == f"{rel}: cut short at {now:,} bytes"
        fake = fake_checkpoint(tmp_path / "spare", 1)  # a whole one back, for the next file
        shutil.copyfile(fake / rel, path / rel)


def test_every_length_of_a_cut_file_is_seen_as_cut_short(tmp_path):
    path = fake_checkpoint(tmp_path, 1)
    for rel in (checkpoint.STATE, ADAPTER, "adapter/adapter_config.json"):
        data = (path / rel).read_bytes()
        probe = tmp_path / f"probe{Path(rel).suffix}"
        lengths = set(range(0, len(data), max(len(data) // 500, 1))) | set(range(max(len(data) - 200, 0), len(data)))
        for n in sorted(lengths):
            probe.write_bytes(data[:n])
            assert checkpoint._cut_short(probe), (rel, n, len(data))
        probe.write_bytes(data)
        assert not checkpoint._cut_short(probe)


def test_a_refused_file_is_refused_even_beside_a_damaged_one(tmp_path):
    """Damage never hides tampering: a planted object is refused, not skipped with the damaged checkpoint."""
    path = fake_checkpoint(tmp_path, 1)
    cut(path / checkpoint.VALUE_WEIGHTS)
    marker = tmp_path / "planted-object-ran"
    state = torch.load(path / "process-0.pt", weights_only=True)
    torch.save({**state, "extra": Planted(marker)}, path / "process-0.pt")
    with pytest.raises(CheckpointRefused, match=r"process-0.pt was refused: it refers to"):
        checkpoint.newest_intact(tmp_path)
    (path / ADAPTER).write_bytes(b"\x80\x04\x95" + bytes(200))  # a pickle where the weights were: refused too
    torch.save(state, path / "process-0.pt")
    with pytest.raises(CheckpointRefused, match=r"adapter_model.safetensors was refused: not a safetensors file"):
        checkpoint.newest_intact(tmp_path)
    assert not marker.exists()


def test_the_walk_takes_the_newest_intact_checkpoint(tmp_path):
    first, second, third = (fake_checkpoint(tmp_path, i) for i in (1, 2, 3))
    cut(third / checkpoint.STATE)
    (second / ADAPTER).unlink()
    path, state, damaged = checkpoint.newest_intact(tmp_path)
    assert path == first and state["iteration"] == 1
    size, expected = (third / checkpoint.STATE).stat().st_size, json.loads(
        (third / checkpoint.MANIFEST).read_text())["files"][checkpoint.STATE]["size"]
    assert [str(err) for err in damaged] == [
        f"checkpoints/iter-000003 is damaged ({checkpoint.STATE}: {size:,} bytes, expected {expected:,})",
        f"checkpoints/iter-000002 is damaged ({ADAPTER}: missing)",
    ]
    cut(first / "process-0.pt")
    assert checkpoint.newest_intact(tmp_path)[:2] == (None, None)
    assert [err.path for err in checkpoint.newest_intact(tmp_path)[2]] == [third, second, first]


def test_a_critic_free_checkpoint_needs_no_value_model(tmp_path):
    path = fake_checkpoint(tmp_path, 1, critic=False)
    assert not (path / checkpoint.VALUE_WEIGHTS).exists()
    assert checkpoint.verify(path)["iteration"] == 1


def test_retention_never_removes_the_new_checkpoint_for_a_damaged_newer_one(tmp_path):
    """After a resume from iter-1 past a damaged iter-3, saving iter-2 with keep=1 keeps iter-2."""
    fake_checkpoint(tmp_path, 1)
    cut(fake_checkpoint(tmp_path, 3) / checkpoint.STATE)
    fake_checkpoint(tmp_path, 2, keep=1)
    assert [p.name for p in checkpoint.checkpoint_dirs(tmp_path)] == ["iter-000002", "iter-000003"]
    assert checkpoint.newest_intact(tmp_path)[0].name == "iter-000002"


# ------------------------------------------------------------------ resume and export, as a user runs them


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, tiny):
    run_dir = tmp_path_factory.mktemp("integrity") / "run"
    proc = run_cli(*SMOKE, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in checkpoint.checkpoint_dirs(run_dir)] == ["iter-000001", "iter-000002"]
    return run_dir


def copy_run(source: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    return run_dir


@pytest.mark.slow
def test_resume_falls_back_to_the_newest_intact_checkpoint_with_one_warning(two_checkpoints, tmp_path):
    run_dir = copy_run(two_checkpoints, tmp_path)
    now, before = cut(run_dir / "checkpoints" / "iter-000002" / checkpoint.STATE)
    resumed = run_cli(*SMOKE, f"hydra.run.dir={run_dir}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("warning:")]
    print("\n".join(warnings))
    assert warnings == [(f"warning: checkpoints/iter-000002 is damaged ({checkpoint.STATE}: {now:,} bytes, expected "
                         f"{before:,}); resuming from iter-000001")]
    assert "Traceback" not in resumed.stderr
    assert f"resumed from {run_dir / 'checkpoints' / 'iter-000001'} (iteration 1 of 2)" in resumed.stdout
    assert [m["iteration"] for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    checkpoint.verify(run_dir / "checkpoints" / "iter-000002")  # saved again, whole


@pytest.mark.slow
def test_resume_with_no_intact_checkpoint_is_one_error_line(two_checkpoints, tmp_path):
    run_dir = copy_run(two_checkpoints, tmp_path)
    cut(run_dir / "checkpoints" / "iter-000002" / checkpoint.STATE)
    now, before = cut(run_dir / "checkpoints" / "iter-000001" / checkpoint.VALUE_WEIGHTS)
    resumed = run_cli(*SMOKE, f"hydra.run.dir={run_dir}", "resume=true")
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    errors = [line for line in resumed.stderr.splitlines() if line.startswith("error:")]
    print("\n".join(errors))
    assert len(errors) == 1 and "Traceback" not in resumed.stderr and "warning:" not in resumed.stderr
    assert errors[0].startswith(f"error: resume=true is not allowed: every checkpoint in {run_dir / 'checkpoints'} "
                                f"is damaged (iter-000002: {checkpoint.STATE}: ")
    assert f"iter-000001: {checkpoint.VALUE_WEIGHTS}: {now:,} bytes, expected {before:,})" in errors[0]


@pytest.mark.slow
def test_export_falls_back_too(two_checkpoints, tmp_path):
    run_dir = copy_run(two_checkpoints, tmp_path)
    shutil.rmtree(run_dir / "adapter")  # a run that did not finish: export takes a checkpoint's adapter
    (run_dir / "checkpoints" / "iter-000002" / ADAPTER).unlink()
    exported = run_cli(str(run_dir), str(tmp_path / "out"), module="mindprint.export")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert [line for line in exported.stderr.splitlines() if line.startswith("warning:")] == [
        f"warning: checkpoints/iter-000002 is damaged ({ADAPTER}: missing); exporting iter-000001"]
    assert (tmp_path / "out" / checkpoint.ADAPTER_WEIGHTS).read_bytes() == (
        run_dir / "checkpoints" / "iter-000001" / ADAPTER).read_bytes()
    named = run_cli(str(run_dir), str(tmp_path / "named"), "--checkpoint", "iter-000002", module="mindprint.export")
    assert named.returncode == 2, named.stderr[-3000:]
    assert [line for line in named.stderr.splitlines() if line.startswith("error:")] == [
        f"error: checkpoints/iter-000002 is damaged ({ADAPTER}: missing)"]
    assert not (tmp_path / "named").exists()
