"""Checkpoints: one directory per saved iteration, written aside and renamed, so none is ever half-written.

RUN_DIR/checkpoints/iter-000050/
    adapter/                   the policy's LoRA (peft format)
    value_model.safetensors    the value model's trainable weights (only with a critic: algo=ppo)
    trainer_state.pt           optimizer, scheduler, β, counters, W&B id, config
    process-N.pt               each process's prompt sampler and RNG states

What a trainer's state is, and how it is restored, lives here too (`save`, `restore`).

Checkpoints are data, not code: the .pt files hold only tensors and plain Python types (plus the few
DeepSpeed types named in `_zero_optimizer_types`), and are read with torch's safe loader
(`weights_only=True`), so a run directory from someone else can be resumed or exported without running
anything in it. A file that needs more is refused in one line (`CheckpointRefused`).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from peft import set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mindprint import distributed
from mindprint.config import CRITIC_FREE, ConfigError

if TYPE_CHECKING:
    from mindprint.trainer import Trainer

CHECKPOINTS = "checkpoints"
STATE = "trainer_state.pt"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
VALUE_WEIGHTS = "value_model.safetensors"
# The layout of the .pt files. Absent: written before checkpoints held only data (numpy's RNG state was a
# pickled ndarray); such checkpoints are refused, with the advice to start a new run directory.
FORMAT = 1
NEW_RUN = "start a new run directory"
# Keys that may change between a checkpoint and its resumption without changing the run itself.
RESUMABLE_CHANGES = ("resume", "dry_run", "device", "ppo.steps", "logger.", "checkpoint.")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a temporary directory is never complete)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("iter-*") if (p / STATE).exists())


def latest(run_dir: Path) -> Optional[Path]:
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def process_file(index: int) -> str:
    return f"process-{index}.pt"


def begin(run_dir: Path, iteration: int, create: bool) -> Path:
    """The temporary directory of the checkpoint for `iteration` (made afresh by the main process)."""
    tmp = run_dir / CHECKPOINTS / f".tmp-iter-{iteration:06d}"
    if create:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def commit(
    tmp: Path, adapter_saver, value_weights: Optional[dict[str, torch.Tensor]], state: dict[str, Any], keep: int
) -> Path:
    """Write the shared part beside the per-process files, then rename: the checkpoint appears whole or not at all."""
    adapter_saver(tmp / "adapter")
    if value_weights is not None:  # a critic-free algorithm has no value model to save
        save_file(value_weights, str(tmp / VALUE_WEIGHTS))
    save_state(state, tmp / STATE)
    final = tmp.parent / tmp.name.removeprefix(".tmp-")
    if final.exists():  # the same iteration saved again after a resume: replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in checkpoint_dirs(tmp.parent.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class CheckpointRefused(ConfigError):
    """A checkpoint file that is not what mindprint writes; one line naming it. Nothing in it was run."""


@lru_cache(maxsize=None)
def _zero_optimizer_types() -> tuple[type, ...]:
    """The only non-plain types a checkpoint holds: what DeepSpeed's ZeRO-2/3 optimizers put in their
    state_dict(), which they read back as such. Plain attribute holders, nothing runs when they are made:
    LossScaler and DynamicLossScaler (the loss scale, `loss_scaler`), ZeroStageEnum (an int enum,
    `zero_stage`) and fragment_address (a (numel, start) dataclass, ZeRO-2's `param_slice_mappings`)."""
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:  # no DeepSpeed here: no ZeRO checkpoint can be resumed anyway
        return ()
    return LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address


def _why(err: Exception) -> str:
    """The safe loader's reason, in a few words (its own message spans a dozen lines)."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it refers to {found.group(1)}, which torch's safe loader refuses"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def save_state(state: dict[str, Any], file: Path) -> None:
    torch.save({"format": FORMAT, **state}, file)


def load_state(path: Path, name: str = STATE, mmap: bool = False) -> dict[str, Any]:
    """A .pt file of the checkpoint at `path`, through torch's safe loader: tensors and plain types only.

    mmap=True reads no tensor data (only the small pickle that lists it): a cheap check of a big file.
    """
    file = path / name
    if not file.is_file():
        raise CheckpointRefused(f"{file} is missing: the checkpoint is incomplete ({NEW_RUN})")
    try:
        with torch.serialization.safe_globals(list(_zero_optimizer_types())):
            state = torch.load(file, weights_only=True, mmap=mmap, map_location="cpu" if mmap else None)
    except Exception as err:  # whatever the file holds, it is not a checkpoint we can read safely
        raise CheckpointRefused(f"{file} was refused: {_why(err)}; nothing in it was run ({NEW_RUN})") from None
    found = state.get("format") if isinstance(state, dict) else None
    if found is None:
        raise CheckpointRefused(f"{file} was refused: written by an older mindprint, whose checkpoints held pickled "
                                f"Python objects ({NEW_RUN})")
    if found != FORMAT:
        raise CheckpointRefused(f"{file} was refused: checkpoint format {found!r}, and this mindprint reads format "
                                f"{FORMAT} ({NEW_RUN}, or use the mindprint that wrote it)")
    return state


def check_safetensors(file: Path) -> None:
    """Refuse `file` unless it is a safetensors file (its header and sizes are checked; no tensor is read)."""
    if not file.is_file():
        raise CheckpointRefused(f"{file} is missing: weights are read from safetensors files only, never from pickles")
    try:
        with safe_open(str(file), framework="pt"):
            pass
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointRefused(f"{file} was refused: not a safetensors file ({reason}); nothing in it was run "
                                f"({NEW_RUN})") from None


def has_critic(state: dict[str, Any]) -> bool:
    """Whether the run that wrote `state` trained a value model."""
    return state["config"]["algo"]["name"] not in CRITIC_FREE


def verify(path: Path) -> None:
    """Check every file of the checkpoint at `path` before anything of it is used (cheap: no tensor is read)."""
    state = load_state(path, STATE, mmap=True)
    for file in sorted(path.glob("process-*.pt")):
        load_state(path, file.name, mmap=True)
    check_safetensors(path / "adapter" / ADAPTER_WEIGHTS)
    if has_critic(state):
        check_safetensors(path / VALUE_WEIGHTS)


def load_adapter_weights(path: Path) -> dict[str, torch.Tensor]:
    check_safetensors(path / "adapter" / ADAPTER_WEIGHTS)
    return load_file(str(path / "adapter" / ADAPTER_WEIGHTS))


def load_value_weights(path: Path) -> dict[str, torch.Tensor]:
    check_safetensors(path / VALUE_WEIGHTS)
    return load_file(str(path / VALUE_WEIGHTS))


def rng_state() -> dict[str, Any]:
    """Every global random stream, as tensors and plain types (numpy's own state holds an ndarray)."""
    version, python, gauss_next = random.getstate()
    numpy = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": {"version": version, "state": list(python), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": numpy["bit_generator"],
            "key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)),
            "pos": int(numpy["state"]["pos"]),
            "has_gauss": int(numpy["has_gauss"]),
            "gauss": float(numpy["gauss"]),
        },
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    """Restore what `rng_state` saved: each stream continues exactly."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    python = rng["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    numpy = rng["numpy"]
    np.random.set_state({
        "bit_generator": numpy["bit_generator"],
        "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
        "has_gauss": numpy["has_gauss"],
        "gauss": numpy["gauss"],
    })


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, current: dict) -> list[str]:
    """'key: saved → current' for every setting that differs, except those a resume may change."""
    a, b = flatten(saved), flatten(current)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES))
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys]


# ------------------------------------------------------------------ a trainer's state


def trained_weights(trainer: Trainer) -> tuple[dict[str, torch.Tensor], Optional[dict[str, torch.Tensor]]]:
    """(LoRA, value model's trainable tensors or None without a critic) on the CPU, whole even under ZeRO-3
    (every process must call)."""
    named = lambda m: [(n, p) for n, p in m.named_parameters() if p.requires_grad]  # noqa: E731
    value_model = trainer.models.value
    policy, value = named(trainer.models.policy), named(value_model) if value_model is not None else []
    with distributed.gathered(trainer.accelerator, [p for _, p in policy + value]):
        lora = {n: p.detach().contiguous().cpu().clone() for n, p in policy}
        weights = {n: p.detach().contiguous().cpu().clone() for n, p in value} if value_model is not None else None
    return lora, weights


def shared_state(trainer: Trainer) -> dict[str, Any]:
    """What all processes share (the main process saves it)."""
    learner = trainer.learner
    return {
        "iteration": trainer.iteration,
        "episode": trainer.episode,
        "kl_coef": trainer.kl_coef,
        "skipped_updates": trainer.skipped_updates,
        # DeepSpeed's optimizer state is sharded: each process saves its own part
        "optimizer": None if learner.zero_stage else learner.optimizer.state_dict(),
        "scheduler": learner.scheduler.state_dict(),
        "num_processes": trainer.accelerator.num_processes,
        "zero_stage": learner.zero_stage,
        "wandb_id": trainer.tracker.wandb_id if trainer.tracker is not None else None,
        "config": dataclasses.asdict(trainer.cfg),
    }


def process_state(trainer: Trainer) -> dict[str, Any]:
    """What differs between processes: their prompts and random streams (and DeepSpeed's optimizer shard)."""
    learner = trainer.learner
    return {
        "optimizer": learner.optimizer.state_dict() if learner.zero_stage else None,
        "sampler": trainer.sampler.state_dict(),
        "shuffle_gen": learner.shuffle_gen.get_state(),
        "rng": rng_state(),
    }


def save(trainer: Trainer) -> Optional[Path]:
    """Save a checkpoint (every process its own part); a state with NaN/Inf weights is never saved."""
    acc, run_dir = trainer.accelerator, trainer.run_dir
    lora, weights = trained_weights(trainer)
    if not (all_finite(lora) and (weights is None or all_finite(weights))):  # same on every process
        return latest(run_dir)
    tmp = begin(run_dir, trainer.iteration, create=acc.is_main_process)
    acc.wait_for_everyone()
    save_state(process_state(trainer), tmp / process_file(acc.process_index))
    acc.wait_for_everyone()
    path = None
    if acc.is_main_process:
        saver = lambda directory: trainer.models.policy.save_pretrained(directory, state_dict=lora)  # noqa: E731
        path = commit(tmp, saver, weights, shared_state(trainer), trainer.cfg.checkpoint.keep)
    acc.wait_for_everyone()
    return path or latest(run_dir)


def restore(trainer: Trainer, state: dict[str, Any], path: Path) -> None:
    """Continue exactly where `state` (and the files beside it in `path`) left off."""
    acc, learner = trainer.accelerator, trainer.learner
    if state["num_processes"] != acc.num_processes:
        raise ConfigError(
            f"resume=true is not allowed with {acc.num_processes} processes: {path.name} was "
            f"written by {state['num_processes']} (launch the same number)"
        )
    if state["zero_stage"] != learner.zero_stage:
        raise ConfigError(
            f"resume=true is not allowed with {distributed.describe(learner.zero_stage)}: {path.name} was written "
            f"under {distributed.describe(state['zero_stage'])} (its optimizer state loads under the same one)"
        )
    params = [p for p in learner.model.parameters() if p.requires_grad]
    with distributed.gathered(acc, params, modifier_rank=0):
        set_peft_model_state_dict(trainer.models.policy, load_adapter_weights(path))
        if trainer.models.value is not None:
            missing = trainer.models.value.load_state_dict(load_value_weights(path), strict=False)
            assert not missing.unexpected_keys, missing.unexpected_keys
    trainer.iteration, trainer.episode = state["iteration"], state["episode"]
    trainer.kl_coef, trainer.skipped_updates = state["kl_coef"], state["skipped_updates"]
    mine = load_state(path, process_file(acc.process_index))
    if learner.zero_stage:  # DeepSpeed reads each process's part from a list indexed by rank
        parts = [None] * acc.num_processes
        parts[acc.process_index] = mine["optimizer"]
        learner.optimizer.load_state_dict(parts)
    else:
        learner.optimizer.load_state_dict(state["optimizer"])
    learner.scheduler.load_state_dict(state["scheduler"])
    trainer.sampler.load_state_dict(mine["sampler"])
    learner.shuffle_gen.set_state(mine["shuffle_gen"])
    set_rng_state(mine["rng"])
