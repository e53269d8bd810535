"""`python -m mindprint.run [overrides] [-m]`: compose and check the config, then build the models and train.

The config is composed and validated before the engine (torch, transformers, peft, accelerate, DeepSpeed)
is imported, so a mistake is answered in about a second.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mindprint import config
from mindprint.analysis.sweep import is_multirun, run_identity, run_objective
from mindprint.cli import cli, critic_key_warnings, fail, register, remove_if_untouched, run_directory, user_mistake
from mindprint.engine.signals import Interrupted
from mindprint.errors import TrainingStopped
from mindprint.records import RunDirInUse, record_failure

register()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    """Returns the run's objective (`objective.*`), the float a sweeper such as Optuna maximises."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        with run_directory(run_dir, cfg):
            return run(cfg, run_dir)
    except RunDirInUse as err:  # the directory is another process's: nothing of it is touched, not even to fail
        if is_multirun():
            print(f"job {run_dir.name} failed: {err}", file=sys.stderr)
            return None
        fail(str(err))


def run(cfg: DictConfig, run_dir: Path) -> Optional[float]:
    """The run in a directory this process holds: its config checked, the engine imported, trained."""
    try:
        run_cfg: config.RunConfig = OmegaConf.to_object(cfg)  # every value check runs here
        if os.environ.get("RANK", "0") == "0":
            for line in critic_key_warnings(run_cfg, list(HydraConfig.get().overrides.task)):
                print(line, file=sys.stderr)
        from mindprint.engine.job import execute  # the engine: seconds to import, so only for a valid config

        summary = execute(run_cfg, run_dir, *run_identity())
        return run_objective(run_cfg.objective, run_dir) if summary else None
    except Interrupted as stop:
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("resume=", "hydra.run.dir="))]
        print(f"interrupted by {stop}. Resume with:\n  python -m mindprint.run {' '.join(overrides)} "
              f"hydra.run.dir={run_dir} resume=true", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except Exception as err:
        message = user_mistake(err)
        if is_multirun():  # one job's failure must not stop the sweep: record it, report at the end
            record_failure(run_dir, message or f"{type(err).__name__}: {err}", traceback.format_exc())
            print(f"job {run_dir.name} failed: {message or err}", file=sys.stderr)
            return None
        if message is None:
            raise
        remove_if_untouched(run_dir)
        fail(message, 1 if isinstance(err, TrainingStopped) else 2)


def main() -> None:
    cli(hydra_main)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Launched on several processes, the run is complete here: process group destroyed (end_training), files
        # closed, W&B finished. Tearing the interpreter down can still abort in gloo's threads ("terminate called
        # without an active exception", exit -6: once in four full test runs here, a ZeRO-3 worker), which would
        # report a finished run as failed: leave without that teardown.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
