"""`python -m mindprint.voice texts=DIR [overrides] [-m]`: the voice pipeline (mindprint.voice.pipeline).

The config is composed and validated before torch and the model libraries are imported, so a mistake is answered
in about a second, as for `python -m mindprint.run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mindprint.cli import cli, one_line_errors, register, run_directory

register()


@hydra.main(config_path="../conf", config_name="voice_pipeline", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with one_line_errors(run_dir), run_directory(run_dir, cfg):
        voice_cfg = OmegaConf.to_object(cfg)  # every value check runs here
        from mindprint.console import hide_progress_bars
        from mindprint.voice.pipeline import Pipeline  # the engine: seconds to import, so only for a valid config

        from mindprint.engine.signals import Interrupted

        hide_progress_bars()
        try:
            Pipeline(voice_cfg, run_dir).run()
        except Interrupted as stop:  # in the PPO stage, which saved a checkpoint: the same command continues it
            overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.run.dir=")]
            print(f"interrupted by {stop}. Resume with:\n  python -m mindprint.voice {' '.join(overrides)} "
                  f"hydra.run.dir={run_dir}", file=sys.stderr)
            sys.exit(128 + stop.signum)


def main() -> None:
    cli(hydra_main)


if __name__ == "__main__":
    main()
