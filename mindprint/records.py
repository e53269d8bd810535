"""A run directory's own files, read and written the same way by the run that writes them and by everything
that reads them later (resume, the comparison report, a sweeper): metrics.jsonl and samples.jsonl (one JSON
object per line, one line per iteration), the FAILED marker of a sweep's job, and what Hydra alone writes.

Standard library only: the light entry points (config errors answered in a second) use it too.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
FAILED = "FAILED"  # a sweep job's one-line failure; its traceback is in error.txt beside it
RECORD = ".hydra"  # what a run was started with: config.yaml, hydra.yaml, overrides.yaml (written once)
LOCK = ".lock"  # held by the one process that writes the run directory; names it (host, pid)


class RecordError(ValueError):
    """A run's record that does not read as mindprint writes it (a line in the middle that is not JSON), or a run
    directory another process holds: a user mistake, one line."""


class RunDirInUse(RecordError):
    """Another process holds the run directory (`run_lock`)."""


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"lora": {"rank": 8}} → {"lora.rank": 8}: one key per setting, as typed on the command line (W&B's config,
    the comparison's settings, the keys a resume compares). An empty dict stays one key holding {}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def jsonable(value: Any) -> Any:
    """Floats as JSON allows them: NaN and ±Inf become null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _lines(path: Path) -> tuple[list[dict], bool]:
    """(the rows of a JSON-lines file, whether its last line was cut short and dropped).

    A line is written whole and flushed before the next one starts, so only the last line can be cut short (a run
    killed mid-write, a disk that filled): without its newline, that line is dropped. Any other line that is not
    JSON was not written by mindprint: RecordError names it.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    rows, cut = [], False
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if n == len(lines):  # no newline after it: the write was cut short
                cut = True
                continue
            raise RecordError(f"{path} is not allowed: line {n} is not JSON") from None
    return rows, cut


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The iterations of a metrics.jsonl (a cut-short last line left out: `cut_short` tells)."""
    return _lines(path)[0]


def cut_short(path: Path) -> bool:
    """Whether the last line of a JSON-lines record was cut short (the run was killed while writing it)."""
    return path.exists() and _lines(path)[1]


def truncate_log(path: Path, iteration: int) -> None:
    """Keep the lines of a per-iteration log up to `iteration` (a resume redoes the rest; a cut line goes too)."""
    if not path.exists():
        return
    keep = [json.dumps(row) + "\n" for row in _lines(path)[0] if row["iteration"] <= iteration]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(keep), encoding="utf-8")
    tmp.replace(path)


def record_failure(run_dir: Path, message: str, details: str) -> None:
    """A sweep job's failure: the one line in FAILED (the sweep's report names it), the traceback in error.txt."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED).write_text(message.strip().splitlines()[0] + "\n")
    (run_dir / "error.txt").write_text(details)


def hydra_only(run_dir: Path) -> bool:
    """Whether `run_dir` holds only what is written before a run starts: its record (.hydra/), its lock and a job log
    (run.log, train_reward.log). A run that fails on bad input before writing anything of its own leaves no
    directory behind."""
    return all(p.name in (RECORD, LOCK) or (p.suffix == ".log" and p.is_file()) for p in run_dir.iterdir())


# What a run writes of its own: PPO's metrics and checkpoints, train_reward's model and evaluation, the voice
# pipeline's record of its config (written when its first stage finishes).
PIPELINE = "pipeline.json"
OUTPUTS = (METRICS, "checkpoints", "model", "eval.json", PIPELINE)


def holds_a_run(run_dir: Path) -> bool:
    """Whether a run has written its own files here: its record is then kept as it is."""
    return any((run_dir / name).exists() for name in OUTPUTS)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One process per run directory: an exclusive lock on RUN_DIR/.lock, held while the block runs.

    An OS lock (POSIX fcntl, which NFSv4 serves as well as local disks) dies with its process, so a run killed by
    SIGKILL or a lost node leaves no stale lock, and a resume after it is not refused. A second process (a SLURM
    requeue beside a hand-typed resume, two terminals) gets RunDirInUse naming the holder, and changes nothing.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 200).decode("utf-8", errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirInUse(f"hydra.run.dir={str(run_dir)!r} is not allowed: it is in use by {holder} (one process per "
                          "run directory: wait for it to end, or choose another directory)") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
