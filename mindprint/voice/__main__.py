"""`python -m mindprint.voice texts=DIR [overrides] [-m]`: the voice pipeline (mindprint.voice.pipeline).

The config is composed and validated before torch and the model libraries are imported, so a mistake is answered
in about a second, as for `python -m mindprint.run`. In a sweep (-m) a failed job is recorded (FAILED, for
mindprint.compare) and the others go on; each job returns its PPO stage's objective (`objective.*`), for Optuna.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mindprint.analysis.sweep import is_multirun, run_objective
from mindprint.cli import cli, fail, register, remove_if_untouched, run_directory, user_mistake
from mindprint.engine.signals import Interrupted
from mindprint.errors import TrainingStopped
from mindprint.records import RunDirInUse, record_failure

register()


@hydra.main(config_path="../conf", config_name="voice_pipeline", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Optional[float]:
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
    try:
        voice_cfg = OmegaConf.to_object(cfg)  # every value check runs here
        from mindprint.console import hide_progress_bars
        from mindprint.voice.pipeline import Pipeline  # the engine: seconds to import, so only for a valid config

        hide_progress_bars()
        Pipeline(voice_cfg, run_dir).run()
        ppo_dir = run_dir / "ppo"
        return run_objective(voice_cfg.objective, ppo_dir) if (ppo_dir / "stage.json").exists() else None
    except Interrupted as stop:  # in the PPO stage, which saved a checkpoint: the same command continues it
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.run.dir=")]
        print(f"interrupted by {stop}. Resume with:\n  python -m mindprint.voice {' '.join(overrides)} "
              f"hydra.run.dir={run_dir}", file=sys.stderr)
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


if __name__ == "__main__":
    main()
