"""`python -m mindprint.voice texts=DIR [overrides] [-m]`: the voice pipeline (mindprint.voice.pipeline).

The config is composed and validated before torch and the model libraries are imported, so a mistake is answered
in about a second, as for `python -m mindprint.run`. In a sweep (-m) a failed job is recorded (FAILED, for
mindprint.compare) and the others go on; each job returns its PPO stage's objective (`objective.*`), for Optuna.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from mindprint.analysis.sweep import run_objective
from mindprint.cli import cli, register
from mindprint.jobs import hydra_job

register()


@hydra.main(config_path="../conf", config_name="voice_pipeline", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    return hydra_job(cfg, lambda run_dir: run(cfg, run_dir), "mindprint.voice")


def run(cfg: DictConfig, run_dir: Path) -> Optional[float]:
    """The pipeline in a directory this process holds: its config checked, the engine imported, every stage run."""
    voice_cfg = OmegaConf.to_object(cfg)  # every value check runs here
    from mindprint.console import hide_progress_bars
    from mindprint.voice.pipeline import Pipeline  # the engine: seconds to import, so only for a valid config

    hide_progress_bars()
    Pipeline(voice_cfg, run_dir).run()
    ppo_dir = run_dir / "ppo"
    return run_objective(voice_cfg.objective, ppo_dir) if (ppo_dir / "stage.json").exists() else None


def main() -> None:
    cli(hydra_main)


if __name__ == "__main__":
    main()
