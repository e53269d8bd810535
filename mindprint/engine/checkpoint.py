"""Checkpoints: one directory per saved iteration, written aside and renamed, so none is ever half-written.

RUN_DIR/checkpoints/iter-000050/
    adapter/                   the policy's LoRA (peft format)
    value_model.safetensors    the value model's trainable weights (only with a critic: algo=ppo)
    trainer_state.pt           optimizer, scheduler, β, counters, W&B id, config
    process-N.pt               each process's prompt sampler and RNG states
    manifest.json              every other file's size and sha256, written last, before the rename

This module knows files, integrity and safe loading. What a run's state is, the trainer builds itself as plain
dicts (`Trainer.state_dict`, `Trainer.process_state_dict`) and hands to `save`; it restores from what
`load_state` returns (`Trainer.load_state_dict`).

A checkpoint can still be damaged after its rename: a crash while copying a run, a full disk, leave files cut
short or missing. Resume and export take the newest intact checkpoint (`newest_intact`), naming each damaged
one skipped in a warning; what is checked, and what it costs, is `verify`'s docstring.

Checkpoints are data, not code: the .pt files hold only tensors and plain Python types (plus the few
DeepSpeed types named in `_zero_optimizer_types`), and are read with torch's safe loader
(`weights_only=True`), so a run directory from someone else can be resumed or exported without running
anything in it. A file that needs more is refused in one line (`CheckpointRefused`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mindprint.config import CRITIC_FREE, ConfigError
from mindprint.engine import distributed
from mindprint.errors import TrainingStopped
from mindprint.records import flatten

CHECKPOINTS = "checkpoints"
STATE = "trainer_state.pt"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
VALUE_WEIGHTS = "value_model.safetensors"
# The layout of the .pt files. Absent: written before checkpoints held only data (numpy's RNG state was a
# pickled ndarray); such checkpoints are refused, with the advice to start a new run directory.
FORMAT = 1
NEW_RUN = "start a new run directory"
# Keys that may change between a checkpoint and its resumption without changing the run itself.
RESUMABLE_CHANGES = ("resume", "dry_run", "device", "ppo.steps", "logger.", "checkpoint.", "objective.")
MANIFEST = "manifest.json"
DIGEST = "sha256"  # hashlib's, through OpenSSL: about 1 GiB/s on one core with SHA extensions
# Files up to this size have their hash checked whenever a checkpoint is picked; bigger ones their size (see verify).
HASHED_WHEN_PICKED = 256 * 2**20
ZIP_START, ZIP_END = b"PK\x03\x04", b"PK\x05\x06"  # a zip's first bytes, and its last record's (torch.save's .pt)
SAFETENSORS_MAX_HEADER = 100_000_000  # what the safetensors library accepts


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Checkpoints, oldest first: every renamed one, intact or not (a temporary directory is never renamed)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("iter-*") if p.is_dir())


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
    """Write the shared part beside the per-process files and the manifest of them all, then rename: the checkpoint
    appears whole or not at all.

    Kept: this checkpoint and the keep - 1 before it. A newer one is left alone: it is one a resume skipped as
    damaged, replaced whole when the run gets there again.
    """
    adapter_saver(tmp / "adapter")
    if value_weights is not None:  # a critic-free algorithm has no value model to save
        save_file(value_weights, str(tmp / VALUE_WEIGHTS))
    save_state({**state, "manifest": MANIFEST}, tmp / STATE)  # so that a manifest lost in a copy is missed
    write_manifest(tmp)
    final = tmp.parent / tmp.name.removeprefix(".tmp-")
    if final.exists():  # the same iteration saved again after a resume: replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    older = [p for p in checkpoint_dirs(tmp.parent.parent) if p.name < final.name]
    for old in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _digest(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, DIGEST).hexdigest()


def write_manifest(directory: Path) -> None:
    """manifest.json: the size and hash of every file of the checkpoint being written in `directory`.

    Hashed right after the files are written, from the page cache: sha256 at about 1 GiB/s, so some 7 s of one
    core for a checkpoint with a 6.7 GiB value model, once per checkpoint.
    """
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, DIGEST: _digest(p)} for p in files}
    (directory / MANIFEST).write_text(json.dumps({"files": entries}, indent=1))


class CheckpointRefused(ConfigError):
    """A checkpoint file that is not what mindprint writes; one line naming it. Nothing in it was run.

    Never skipped for an older checkpoint: a file that refers to code, or a pickle where weights should be, is
    someone's doing, and resuming quietly from an older checkpoint would hide it.
    """


class CheckpointDamaged(ConfigError):
    """A checkpoint with a file missing, cut short, or unlike its manifest: skipped for an older one."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path.parent.name}/{path.name} is damaged ({reason})")


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
            # on the CPU: restore() moves each tensor to its parameter's device, so N processes do not all
            # load onto the device that saved it (and a checkpoint saved on a GPU resumes on a CPU)
            state = torch.load(file, weights_only=True, mmap=mmap, map_location="cpu")
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
    """Whether the run that wrote `state` trained a value model (a config without `algo` predates the
    critic-free algorithms: PPO)."""
    return state["config"].get("algo", {}).get("name", "ppo") not in CRITIC_FREE


def _cut_short(file: Path) -> bool:
    """Whether `file` looks like the start of a longer file, by its own structure: an empty file, a zip without
    its closing record (torch.save's .pt: the record is its last 22 bytes), a safetensors file shorter than its
    header says, a JSON file that does not parse. Anything else is left to the safe loaders to accept or refuse."""
    size = file.stat().st_size
    if size == 0:
        return True
    with open(file, "rb") as f:
        if file.suffix == ".json":
            try:
                json.loads(f.read())
                return False
            except ValueError:
                return True
        head = f.read(9)
        if file.suffix == ".pt":
            if not (head.startswith(ZIP_START) or ZIP_START.startswith(head)):
                return False  # not a zip: for the loader to refuse
            start = max(size - 65_557, 0)  # the closing record: 22 bytes and at most a 64 KiB comment
            f.seek(start)
            tail = f.read()
            at = tail.rfind(ZIP_END)
            if at < 0 or at + 22 > len(tail):
                return True
            return at + 22 + int.from_bytes(tail[at + 20:at + 22], "little") > len(tail)  # + its comment
        if file.suffix == ".safetensors":
            if size < 8:
                return True
            length = int.from_bytes(head[:8], "little")
            if length > SAFETENSORS_MAX_HEADER or head[8:9] not in (b"", b"{"):
                return False  # not a safetensors file (a pickle, say): for the loader to refuse
            if size < 8 + length:
                return True
            f.seek(8)
            try:
                header = json.loads(f.read(length))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                return False
            return size < 8 + length + end
    return False


def _read_manifest(path: Path) -> tuple[Optional[dict[str, dict]], Optional[str]]:
    """(the files manifest.json lists, or None without one; why it is damaged, or None)."""
    file = path / MANIFEST
    if not file.is_file():
        return None, None
    try:
        files = json.loads(file.read_text())["files"]
        sizes = {rel: int(entry["size"]) for rel, entry in files.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, f"{MANIFEST}: unreadable"
    inside = path.resolve()
    for rel in sizes:
        if not (path / rel).resolve().is_relative_to(inside):
            raise CheckpointRefused(f"{file} was refused: it lists {rel!r}, outside the checkpoint ({NEW_RUN})")
    return files, None


def verify(path: Path, hash_limit: Optional[int] = HASHED_WHEN_PICKED) -> dict[str, Any]:
    """Check every file of the checkpoint at `path` before anything of it is used; its trainer state.

    Raises CheckpointRefused for a file the safe loaders refuse (it would need code to load), and otherwise
    CheckpointDamaged for a file missing, cut short, or unlike the manifest written at commit. A file cut short
    is recognised by its own structure and never reaches a loader; every other tensor file is opened by its
    loader even when another file is damaged, so that a refused file is never skipped as merely damaged.

    What is read: the .pt files' pickles and the safetensors headers (no tensor data: cheap at any size), every
    file's size against the manifest (a stat), and the hash of every file up to `hash_limit` bytes (None: all).
    The default, 256 MiB, hashes the adapter, the per-process states and configs, and the whole of a small or
    critic-free run's checkpoint, but not a big value model or its optimizer state: hashing a 6.7 GiB value
    model is some 7 s of one core plus 6.7 GiB read from disk (a minute on slow network storage) that `restore`
    then reads again, and it adds protection only against a file of the right size with wrong bytes (bit rot,
    a faulty disk). Crashes and full disks, the damage seen, leave files short or missing: the sizes catch
    that. A checkpoint written before manifests is checked by its structure and loaders alone.
    """
    manifest, broken = _read_manifest(path)
    damage = [broken] if broken else []
    shown = set()  # files already named in `damage`

    def usable(rel: str) -> bool:
        """Present and whole by its structure (recording why not)."""
        file = path / rel
        if not file.is_file():
            damage.append(f"{rel}: missing")
        elif _cut_short(file):
            size, expected = file.stat().st_size, (manifest or {}).get(rel, {}).get("size")
            damage.append(f"{rel}: {size:,} bytes, expected {expected:,}" if expected is not None and size != expected
                          else f"{rel}: cut short at {size:,} bytes")
        else:
            return True
        shown.add(rel)
        return False

    state = load_state(path, STATE, mmap=True) if usable(STATE) else None
    if state is not None:
        processes = [process_file(i) for i in range(state["num_processes"])]
    else:
        processes = sorted(p.name for p in path.glob("process-*.pt"))
    for name in processes:
        if usable(name):
            load_state(path, name, mmap=True)
    for rel in (f"adapter/{ADAPTER_WEIGHTS}", VALUE_WEIGHTS):
        if rel == VALUE_WEIGHTS and not (has_critic(state) if state is not None else (path / rel).exists()):
            continue
        if usable(rel):
            check_safetensors(path / rel)
    usable("adapter/adapter_config.json")
    if manifest is None and not broken and state is not None and state.get("manifest"):
        damage.append(f"{MANIFEST}: missing")  # written with one: lost in a copy
    for rel, entry in (manifest or {}).items():
        file = path / rel
        if rel in shown:
            continue
        if not file.is_file():
            damage.append(f"{rel}: missing")
        elif (size := file.stat().st_size) != entry["size"]:
            damage.append(f"{rel}: {size:,} bytes, expected {entry['size']:,}")
        elif (hash_limit is None or size <= hash_limit) and _digest(file) != entry.get(DIGEST):
            damage.append(f"{rel}: its {DIGEST} differs from the manifest's")
    if damage:
        raise CheckpointDamaged(path, damage[0])
    return state


def newest_intact(
    run_dir: Path, hash_limit: Optional[int] = HASHED_WHEN_PICKED
) -> tuple[Optional[Path], Optional[dict[str, Any]], list[CheckpointDamaged]]:
    """(the newest intact checkpoint, its trainer state, the damaged ones newer than it, newest first), walking
    newest first; (None, None, all of them) if none is intact. A refused file stops the walk (CheckpointRefused)."""
    damaged = []
    for path in reversed(checkpoint_dirs(run_dir)):
        try:
            return path, verify(path, hash_limit), damaged
        except CheckpointDamaged as err:
            damaged.append(err)
    return None, None, damaged


def all_damaged(damaged: list[CheckpointDamaged]) -> str:
    """'iter-000002: trainer_state.pt: 512 bytes, expected 1,033,759; iter-000001: ...'"""
    return "; ".join(f"{err.path.name}: {err.reason}" for err in damaged)


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


def config_changes(saved: dict, current: dict) -> list[str]:
    """'key: saved → current' for every setting that differs, except those a resume may change."""
    a, b = flatten(saved), flatten(current)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES))
    # the learning-rate schedule is built over ppo.steps: only a constant one is unchanged by a new length
    if a.get("ppo.steps") != b.get("ppo.steps") and b.get("ppo.lr_scheduler") != "constant":
        keys.append("ppo.steps")
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys]


def _bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested state (dicts, lists, tuples): what a checkpoint of it takes on disk, about."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_bytes(v) for v in obj)
    return 0


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def save(run_dir: Path, iteration: int, accelerator: Accelerator, shared: dict[str, Any], mine: dict[str, Any],
         adapter_weights: dict[str, torch.Tensor], adapter_saver: Callable[[Path], None],
         value_weights: Optional[dict[str, torch.Tensor]], keep: int) -> Optional[Path]:
    """Write the checkpoint of `iteration` (collective: every process calls): each process its own state `mine`,
    the main process the `shared` state, the adapter (`adapter_saver(directory)` writes `adapter_weights`) and the
    value weights, then the manifest and the rename (`commit`). Returns the newest checkpoint.

    A write that fails (a full disk, a quota) on any process removes the half-written checkpoint, leaves the previous
    one as it was, and raises TrainingStopped on every process, naming the directory and the space needed.
    """
    previous = latest(run_dir)
    tmp = begin(run_dir, iteration, create=False)
    failure = _attempt(lambda: begin(run_dir, iteration, create=True)) if accelerator.is_main_process else None
    if distributed.everywhere(accelerator, failure is None):
        failure = _attempt(lambda: save_state(mine, tmp / process_file(accelerator.process_index)))
    path = None
    if distributed.everywhere(accelerator, failure is None) and accelerator.is_main_process:
        failure = _attempt(lambda: commit(tmp, adapter_saver, value_weights, shared, keep))
        path = latest(run_dir) if failure is None else None
    if not distributed.everywhere(accelerator, failure is None):
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        needed = _size(previous) if previous else _bytes([shared, mine, adapter_weights, value_weights])
        reason = _reason(failure) if failure is not None else "a write failed on another process"
        free = shutil.disk_usage(run_dir).free
        raise TrainingStopped(
            f"checkpoint iter-{iteration:06d} was not written to {run_dir / CHECKPOINTS}: {reason} ({_gib(free)} "
            f"free, about {_gib(needed)} needed); the previous checkpoint, {previous.name if previous else 'none'}, "
            "is intact")
    accelerator.wait_for_everyone()
    return path or latest(run_dir)


def _attempt(write: Callable[[], Any]) -> Optional[Exception]:
    """None if `write` succeeded, else what it raised: an OSError (a full disk: ENOSPC, a quota: EDQUOT, ...), or
    the RuntimeError of torch.save's writer and the SafetensorError of safetensors, which report the same."""
    try:
        write()
        return None
    except Exception as err:  # noqa: BLE001 - every process must learn of it, or the others wait forever
        return err


def _reason(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
