"""Checkpoints are data, not code: resume and export never unpickle arbitrary objects (issue 19)."""

import os
import pickle
import random
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from test_reliability import TINY_RUN

from mindprint.cli import compose
from mindprint.config import ConfigError
from mindprint.engine import checkpoint
from mindprint.engine.data import load_table
from mindprint.engine.job import execute

LAST = "iter-000002"
# Every kind of file a checkpoint holds.
KINDS = ["trainer_state.pt", "process-0.pt", "adapter/adapter_model.safetensors", "value_model.safetensors"]


class Planted:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, tiny):
    run_dir = tmp_path_factory.mktemp("checkpointed") / "run"
    proc = run_cli(*TINY_RUN, "ppo.steps=2", "checkpoint.every=1", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert checkpoint.latest(run_dir).name == LAST
    return run_dir


def plant(run_dir: Path, kind: str, marker: Path) -> Path:
    """Put the planted object in `kind` of the newest checkpoint, as someone sharing the run directory could."""
    target = run_dir / checkpoint.CHECKPOINTS / LAST / kind
    if kind.endswith(".pt"):  # the real state, with one more entry
        state = torch.load(target, weights_only=False)
        state["extra"] = Planted(marker)
        torch.save(state, target)
    else:  # a pickle where the safetensors file was
        target.write_bytes(pickle.dumps({"weights": Planted(marker)}))
    return target


def refused_in_one_line(proc, name: str) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert name in errors[0], errors[0]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_planted_object_is_refused_by_resume_and_export_and_never_runs(checkpointed, tmp_path, kind):
    run_dir = tmp_path / "run"
    shutil.copytree(checkpointed, run_dir)
    marker = tmp_path / "planted-object-ran"
    plant(run_dir, kind, marker)
    name = f"{LAST}/{kind}"

    resumed = run_cli(*TINY_RUN, "ppo.steps=2", "checkpoint.every=1", f"hydra.run.dir={run_dir}", "resume=true")
    print(f"resume, {kind}: exit {resumed.returncode}, marker {'CREATED' if marker.exists() else 'absent'}")
    assert not marker.exists(), "resume=true ran the planted object"
    print(f"  {refused_in_one_line(resumed, name)}")

    for merge in ([], ["--merge"]):
        out = tmp_path / f"exported{'-merged' if merge else ''}"
        exported = run_cli(str(run_dir), str(out), "--checkpoint", LAST, *merge, module="mindprint.export")
        print(f"export{' --merge' if merge else ''}, {kind}: exit {exported.returncode}, "
              f"marker {'CREATED' if marker.exists() else 'absent'}")
        assert not marker.exists(), "export ran the planted object"
        print(f"  {refused_in_one_line(exported, name)}")
        assert not out.exists()


@pytest.mark.slow
def test_an_adapter_without_safetensors_is_refused(checkpointed, tmp_path):
    """peft would fall back to adapter_model.bin, a pickle: export takes adapter weights from safetensors only."""
    run_dir = tmp_path / "run"
    shutil.copytree(checkpointed, run_dir)
    marker = tmp_path / "planted-object-ran"
    adapter = run_dir / "adapter"
    (adapter / "adapter_model.safetensors").unlink()
    torch.save({"weights": Planted(marker)}, adapter / "adapter_model.bin")
    exported = run_cli(str(run_dir), str(tmp_path / "out"), "--merge", module="mindprint.export")
    assert not marker.exists()
    line = refused_in_one_line(exported, "adapter_model.safetensors")
    print(line)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_loads_with_the_safe_loader_alone(checkpointed):
    for path in checkpoint.checkpoint_dirs(checkpointed):
        for name in (checkpoint.STATE, checkpoint.process_file(0)):
            state = torch.load(path / name, weights_only=True)
            assert state["format"] == checkpoint.FORMAT


def test_every_rng_round_trips_exactly_through_the_safe_loader(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    for _ in range(5):  # somewhere in the middle of each stream, not at a fresh seed
        torch.rand(3), random.random(), np.random.rand(), np.random.randn()  # randn leaves numpy a cached gauss
    generator = torch.Generator().manual_seed(4)
    torch.rand(7, generator=generator)

    torch.save({"rng": checkpoint.rng_state(), "gen": generator.get_state()}, tmp_path / "state.pt")

    def draws():
        return (torch.rand(5).tolist(), [random.random() for _ in range(5)], random.getrandbits(200),
                np.random.randn(5).tolist(), np.random.randint(0, 1 << 30, 5).tolist(),
                torch.rand(5, generator=generator).tolist())

    expected = draws()
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    checkpoint.set_rng_state(saved["rng"])
    generator.set_state(saved["gen"])
    assert draws() == expected


@pytest.mark.slow
def test_a_checkpoint_from_before_format_1_is_refused_in_one_line(checkpointed, tmp_path):
    """Old checkpoints held numpy's RNG state as a pickled ndarray: they are refused, with what to do instead."""
    run_dir = tmp_path / "run"
    shutil.copytree(checkpointed, run_dir)
    last = run_dir / checkpoint.CHECKPOINTS / LAST
    for name in (checkpoint.STATE, checkpoint.process_file(0)):  # as the code before format 1 wrote them
        state = torch.load(last / name, weights_only=True)
        del state["format"]
        if "rng" in state:
            state["rng"]["numpy"] = np.random.get_state()
        torch.save(state, last / name)
    with pytest.raises(ConfigError) as info:
        execute(compose([*TINY_RUN, "ppo.steps=2", "checkpoint.every=1", "resume=true"]), run_dir)
    message = str(info.value)
    print(message)
    assert "\n" not in message and f"{LAST}/{checkpoint.STATE} was refused: written by an older mindprint" in message
    assert message.endswith("(start a new run directory)")


@pytest.mark.parametrize("name", ["prompts.py", "prompts.pkl", "prompts.pickle", "prompts.pt"])
def test_code_and_pickle_data_files_are_refused_in_one_line(tmp_path, name):
    marker = tmp_path / "planted-object-ran"
    for path in (tmp_path / name, tmp_path / "absent" / name):  # here, or a name that only the hub might know
        if path.parent == tmp_path:
            path.write_bytes(pickle.dumps(Planted(marker)) if not name.endswith(".py") else
                             f"import os\nos.system('touch {marker}')\n".encode())
        for key in ("data.name", "pairs.name"):
            with pytest.raises(ConfigError) as info:
                load_table(key, str(path), "train")
            message = str(info.value)
            assert "\n" not in message and message.startswith(f"{key}={str(path)!r} is not allowed: a ."), message
    print(message)
    assert not marker.exists()


def test_the_pickle_reading_datasets_builder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.name='pandas' is not allowed: datasets' pandas builder reads pickles"):
        load_table("data.name", "pandas", "train")
