"""Checkpoints: one directory per saved iteration, written aside and renamed, so none is ever half-written.

RUN_DIR/checkpoints/iter-000050/
    adapter/                   the policy's LoRA (peft format)
    value_model.safetensors    the value model's trainable weights
    trainer_state.pt           optimizer, scheduler, β, counters, W&B id, config
    process-N.pt               each process's prompt sampler and RNG states
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
STATE = "trainer_state.pt"
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
    tmp: Path, adapter_saver, value_weights: dict[str, torch.Tensor], state: dict[str, Any], keep: int
) -> Path:
    """Write the shared part beside the per-process files, then rename: the checkpoint appears whole or not at all."""
    adapter_saver(tmp / "adapter")
    save_file(value_weights, str(tmp / "value_model.safetensors"))
    torch.save(state, tmp / STATE)
    final = tmp.parent / tmp.name.removeprefix(".tmp-")
    if final.exists():  # the same iteration saved again after a resume: replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in checkpoint_dirs(tmp.parent.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(path: Path, name: str = STATE) -> dict[str, Any]:
    # Our own file, holding RNG states and optimizer tensors: not restricted to plain tensors.
    return torch.load(path / name, weights_only=False)


def load_value_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "value_model.safetensors"))


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
