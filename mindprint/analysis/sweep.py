"""Hydra multirun support: run names and W&B groups, the objective a sweeper optimises, a report of failed jobs
(and of an Optuna sweep's best trial).

A failing job of a sweep does not stop the others: it leaves a one-line FAILED file in its
directory, and `SweepReport` (a Hydra callback) names every failed job at the end and exits 1.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mindprint.analysis.runs import best_trial, load_run
from mindprint.analysis.stats import objective_value
from mindprint.config import ObjectiveConfig
from mindprint.records import FAILED, METRICS, read_metrics

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


GROUP_LIMIT = 128  # W&B's longest group name


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def run_identity() -> tuple[str, str]:
    """(group, name) of a run in W&B.

    group: the experiment and every override that sets the run apart except `seed`, sorted
    (`rank_sweep/lora.rank=8`): the seeds of one setting share a group, so W&B's grouping shows their mean and
    band as the compare report does, also when a study is launched as two sweeps. name: in a sweep, the
    overrides the sweep varies, seed included (`lora.rank=8,seed=1`); else all of them.
    """
    hc = HydraConfig.get()
    experiment = hc.runtime.choices.get("experiment") or "mindprint"
    overrides = [o for o in hc.overrides.task if not o.lstrip("~").startswith(NOT_IN_NAME)]
    setting = sorted(o for o in overrides if _key(o) != "seed")
    group = experiment + ("/" + ",".join(setting) if setting else "")
    if len(group) > GROUP_LIMIT:  # kept unique and stable by a hash of the whole
        group = group[: GROUP_LIMIT - 9] + "~" + hashlib.sha1(group.encode()).hexdigest()[:8]
    if hc.mode != RunMode.MULTIRUN:
        return group, ",".join(overrides) or experiment
    swept = swept_keys(hc)
    varied = [o for o in overrides if _key(o) in swept]
    return group, ",".join(varied or overrides) or experiment


def run_objective(objective: ObjectiveConfig, run_dir: Path) -> float:
    """The run's `objective` (see mindprint.analysis.stats.objective_value), read off its metrics.jsonl."""
    return objective_value(objective.name, objective.kl_weight, read_metrics(run_dir / METRICS))


OPTUNA = "hydra_plugins.hydra_optuna_sweeper"
# The Optuna sweep under way in this process, for `report_all_trials_failed`
_optuna_sweep: dict[str, DictConfig] = {}


class SweepReport(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Under hydra/sweeper=optuna: maximise (a run's objective is a reward; Optuna's default is to minimise),
        and let failed trials be reported here at the end, as in grid sweeps, rather than by Optuna's
        max_failure_rate. Runs before the sweeper is built from this same config."""
        sweeper = config.hydra.sweeper
        if not str(sweeper.get("_target_", "")).startswith(OPTUNA):
            return
        given = {_key(o): o.split("=", 1)[1] for o in config.hydra.overrides.hydra if "=" in o}
        if given.get("hydra.sweeper.direction", "maximize") != "maximize":
            print(f"error: hydra.sweeper.direction={given['hydra.sweeper.direction']} is not allowed: expected "
                  f"maximize (objective.name={config.objective.name} is higher-is-better)", file=sys.stderr)
            sys.exit(2)
        settings = {"direction": "maximize", "max_failure_rate": 1.0}
        settings = {k: v for k, v in settings.items() if f"hydra.sweeper.{k}" not in given}
        with read_write(config.hydra), open_dict(config.hydra):
            for key, value in settings.items():
                sweeper[key] = value
                # as if typed: each job's config (.hydra/hydra.yaml) is composed again from these overrides
                config.hydra.overrides.hydra.append(f"hydra.sweeper.{key}={value}")
        _optuna_sweep["config"] = config

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        report_sweep(config)


def report_all_trials_failed(err: Exception) -> None:
    """When every trial of an Optuna sweep failed, the sweeper asks its study for the best trial and Optuna raises
    ValueError("No trials are completed yet.") before Hydra's multirun end: report the sweep as its end would
    (every failed job named in one line, exit 1) instead of that traceback. Returns for any other error."""
    config = _optuna_sweep.get("config")
    if config is not None and isinstance(err, ValueError) and "No trials are completed" in str(err):
        report_sweep(config)


def report_sweep(config: DictConfig) -> None:
    """How many jobs completed, the best trial of an Optuna sweep, and each failed job's one line (then exit 1)."""
    sweep_dir = Path(config.hydra.sweep.dir)
    jobs = sorted(p.parent for p in sweep_dir.glob("*/.hydra"))
    failed = sorted(p.parent for p in sweep_dir.glob(f"*/{FAILED}"))
    print(f"sweep {sweep_dir}: {len(jobs) - len(failed)} of {len(jobs)} jobs completed")
    results = sweep_dir / "optimization_results.yaml"
    if results.exists() and str(config.hydra.sweeper.get("_target_", "")).startswith(OPTUNA):
        print(best_trial_line(sweep_dir, OmegaConf.to_container(OmegaConf.load(results)), config))
    if failed:
        for job in failed:
            print(f"error: job {job.name} failed: {(job / FAILED).read_text().strip()}", file=sys.stderr)
        sys.exit(1)


def best_trial_line(sweep_dir: Path, results: dict, config: DictConfig) -> str:
    """'best trial: JOB_DIR (objective NAME = VALUE; PARAMS)' from an Optuna sweep's optimization_results.yaml."""
    params = results.get("best_params") or {}
    runs = [load_run(p.parent) for p in sorted(sweep_dir.glob("*/.hydra"))]
    trial = best_trial(params, runs)
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    where = trial.path.name if trial else "(no job directory matches its parameters)"
    return f"best trial: {where} (objective {config.objective.name} = {results.get('best_value')}; {shown})"
