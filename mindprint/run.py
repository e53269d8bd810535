"""`python -m mindprint.run [overrides] [-m]`: compose and check the config, then build the models and train.

The config is composed and validated before the engine (torch, transformers, peft, accelerate, DeepSpeed)
is imported, so a mistake is answered in about a second.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mindprint import config
from mindprint.analysis.sweep import run_identity, run_objective
from mindprint.cli import cli, critic_key_warnings, register
from mindprint.jobs import hydra_job

register()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    """Returns the run's objective (`objective.*`), the float a sweeper such as Optuna maximises."""
    return hydra_job(cfg, lambda run_dir: run(cfg, run_dir), "mindprint.run", "resume=true")


def run(cfg: DictConfig, run_dir: Path) -> Optional[float]:
    """The run in a directory this process holds: its config checked, the engine imported, trained."""
    run_cfg: config.RunConfig = OmegaConf.to_object(cfg)  # every value check runs here
    if os.environ.get("RANK", "0") == "0":
        for line in critic_key_warnings(run_cfg, list(HydraConfig.get().overrides.task)):
            print(line, file=sys.stderr)
    from mindprint.engine.job import execute  # the engine: seconds to import, so only for a valid config

    summary = execute(run_cfg, run_dir, *run_identity())
    return run_objective(run_cfg.objective, run_dir) if summary else None


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
