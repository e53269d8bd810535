"""Hydra multirun support: run names and W&B groups from the sweep, and a report of failed jobs.

A failing job of a sweep does not stop the others: it leaves a one-line FAILED file in its
directory, and `SweepReport` (a Hydra callback) names every failed job at the end and exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

FAILED = "FAILED"
# Overrides that say how a run is launched or logged, not what it is: left out of run names.
NOT_IN_NAME = ("+experiment=", "experiment=", "logger.", "logger=", "hydra.", "hydra/", "device=")


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def swept_keys(hc: DictConfig) -> set[str]:
    """Keys the sweep varies: comma lists or sweep functions on the command line, or hydra.sweeper.params."""
    keys = set(hc.sweeper.get("params") or {})
    launched = Path(hc.sweep.dir) / "multirun.yaml"  # the sweep's own command line, saved before any job
    if launched.exists():
        parsed = OverridesParser.create().parse_overrides(list(OmegaConf.load(launched).hydra.overrides.task))
        keys |= {o.key_or_group for o in parsed if o.is_sweep_override()}
    return keys


def run_identity() -> tuple[str, str]:
    """(group, name): the group names the sweep (or the experiment), the name the overrides that differ."""
    hc = HydraConfig.get()
    experiment = hc.runtime.choices.get("experiment") or "mindprint"
    overrides = [o for o in hc.overrides.task if not o.lstrip("~").startswith(NOT_IN_NAME)]
    if hc.mode != RunMode.MULTIRUN:
        return experiment, ",".join(overrides) or experiment
    swept = swept_keys(hc)
    varied = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in swept]
    sweep = Path(hc.sweep.dir)
    return f"{experiment}-{sweep.parent.name}_{sweep.name}", ",".join(varied or overrides) or experiment


def record_failure(run_dir: Path, message: str, details: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED).write_text(message.strip().splitlines()[0] + "\n")
    (run_dir / "error.txt").write_text(details)


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(p.parent for p in sweep_dir.glob("*/.hydra"))
        failed = sorted(p.parent for p in sweep_dir.glob(f"*/{FAILED}"))
        print(f"sweep {sweep_dir}: {len(jobs) - len(failed)} of {len(jobs)} jobs completed")
        if failed:
            for job in failed:
                print(f"error: job {job.name} failed: {(job / FAILED).read_text().strip()}", file=sys.stderr)
            sys.exit(1)
