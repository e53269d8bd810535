"""Run directories as the comparison reads them: each run's config and overrides (.hydra/), metrics.jsonl,
summary.json and FAILED marker, and the runs under sweep directories. Reads only what runs write locally, so
W&B is optional.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from mindprint.records import FAILED, METRICS, PIPELINE, RecordError, cut_short, flatten, read_metrics

# Keys that do not change what a run learns: left out of a run's setting, so seeds (and reruns logged
# elsewhere, or checkpointed more often) fall into one group. ppo.steps is a budget, not a setting, while the
# learning rate is constant (compare cuts runs at the shortest common budget); with a schedule it is a setting.
NOT_A_SETTING = ("seed", "logger.", "checkpoint.", "resume", "dry_run", "objective.")
# Overrides that say how a run is launched or logged, never what differs between runs.
LAUNCH_OVERRIDES = ("hydra.", "hydra/", "logger", "checkpoint", "resume", "dry_run")


class CompareError(Exception):
    """A user mistake (a bad path, runs that should not be compared, a bad option): one line, exit code 2."""


@dataclass
class Run:
    path: Path
    name: str
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    failure: Optional[str] = None
    config: Optional[dict] = None  # flattened .hydra/config.yaml (None: the run has none)
    overrides: dict[str, str] = field(default_factory=dict)  # key → value of .hydra/overrides.yaml
    history: list[dict] = field(default_factory=list)  # metrics within the common budget
    cut_short: bool = False  # metrics.jsonl's last line was cut short (killed mid-write): left out

    @property
    def seed(self) -> Any:
        return (self.config or {}).get("seed")

    def setting(self) -> Optional[dict]:
        if self.config is None:
            return None
        keep = dict(self.config)
        if keep.get("ppo.lr_scheduler", "constant") == "constant":
            keep.pop("ppo.steps", None)
        return {k: v for k, v in keep.items() if not k.startswith(NOT_A_SETTING)}


def parse_overrides(items: list) -> dict[str, str]:
    """`+experiment=demo`, `lora.rank=8`, `~ppo.x` → {"experiment": "demo", "lora.rank": "8", "ppo.x": None}."""
    out = {}
    for item in items or []:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if not key.startswith(LAUNCH_OVERRIDES):
            out[key] = value if _ else None
    return out


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CompareError(f"{path} is not allowed: it does not read as YAML ({str(err).splitlines()[0]})") from None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CompareError(f"{path} is not allowed: it does not read as JSON ({err})") from None


def _name(path: Path, overrides: dict[str, str]) -> str:
    items = [f"{k}={v}" for k, v in overrides.items() if k != "experiment"]
    return ",".join(items) or path.name


def load_run(path: Path) -> Run:
    hydra_dir = path / ".hydra"
    config = flatten(read_yaml(hydra_dir / "config.yaml") or {}) if (hydra_dir / "config.yaml").exists() else None
    overrides = parse_overrides(read_yaml(hydra_dir / "overrides.yaml")) if (hydra_dir / "overrides.yaml").exists() else {}
    trained = path / "ppo" if (path / PIPELINE).exists() else path  # a voice pipeline's run: its PPO stage
    summary = _json(trained / "summary.json") if (trained / "summary.json").exists() else {}
    run = Run(path=path, name=summary.get("name") or _name(path, overrides), summary=summary, config=config,
              overrides=overrides)
    if (path / FAILED).exists():
        run.failure = (path / FAILED).read_text().strip()
    metrics = trained / METRICS
    if metrics.exists():
        try:  # a killed or still-running run is a member of a study: its complete lines are read
            run.metrics, run.cut_short = read_metrics(metrics), cut_short(metrics)
        except RecordError as err:
            raise CompareError(str(err)) from None
        if not run.metrics and run.failure is None:
            run.failure = f"empty {METRICS}"
    elif run.failure is None:
        run.failure = f"no {METRICS}"
    return run


def _is_run(path: Path) -> bool:
    return (path / METRICS).exists() or (path / FAILED).exists() or (path / PIPELINE).exists()


def discover(paths: list[Path]) -> tuple[list[Run], list[Path]]:
    """(runs, sweep directories) under `paths`."""
    runs, sweeps = [], []
    for path in paths:
        if not path.is_dir():
            raise CompareError(f"PATH={str(path)!r} is not allowed: expected a sweep or run directory")
        if _is_run(path):
            runs.append(load_run(path))
            continue
        jobs = sorted((p for p in path.iterdir() if p.is_dir() and ((p / ".hydra").exists() or _is_run(p))),
                      key=_job_order)
        if not jobs:
            raise CompareError(f"PATH={str(path)!r} is not allowed: it holds no run (no metrics.jsonl found)")
        sweeps.append(path)
        runs += [load_run(p) for p in jobs]
    seen: dict[Path, int] = {}
    for run in runs:
        seen[run.path.resolve()] = seen.get(run.path.resolve(), 0) + 1
    twice = [str(p) for p, n in seen.items() if n > 1]
    if twice:
        raise CompareError(f"PATH is not allowed twice: {twice[0]} was given more than once")
    return runs, sweeps


def _job_order(path: Path) -> tuple:
    num, _, rest = path.name.partition("_")
    return (0, int(num), rest) if num.isdigit() else (1, 0, path.name)


def best_trial(params: dict, runs: list[Run]) -> Optional[Run]:
    """The completed run whose overrides match an Optuna study's best parameters (numbers compared as numbers)."""
    def matches(run: Run) -> bool:
        for key, want in params.items():
            got = run.overrides.get(key)
            try:
                if got is None or not math.isclose(float(got), float(want), rel_tol=1e-9):
                    return False
            except (TypeError, ValueError):
                if str(got) != str(want):
                    return False
        return True

    found = [r for r in runs if matches(r) and r.failure is None]
    return found[0] if found else None
