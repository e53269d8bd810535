"""What every training entry point does around its work in a Hydra job (`mindprint.run`, `mindprint.voice`): the
run directory held for this process, an interruption answered with the command that resumes it, a user mistake as
one line with exit 2 (and the directory removed if nothing was written), and in a sweep a failed job recorded in
FAILED while the others go on. The work returns the job's objective, the float a sweeper such as Optuna maximises.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Callable, Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mindprint.analysis.sweep import is_multirun
from mindprint.cli import fail, remove_if_untouched, run_directory, user_mistake
from mindprint.engine.signals import Interrupted
from mindprint.errors import TrainingStopped
from mindprint.records import RunDirInUse, record_failure

Work = Callable[[Path], Optional[float]]


def hydra_job(cfg: DictConfig, work: Work, module: str, resume_flag: str = "") -> Optional[float]:
    """`work(run_dir)` in the job's run directory. `module` and `resume_flag` (e.g. "resume=true") make the command
    printed after an interruption: `python -m MODULE OVERRIDES hydra.run.dir=RUN_DIR RESUME_FLAG`."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        with run_directory(run_dir, cfg):
            return _answered(work, run_dir, module, resume_flag)
    except RunDirInUse as err:  # the directory is another process's: nothing of it is touched, not even to fail
        if is_multirun():
            print(f"job {run_dir.name} failed: {err}", file=sys.stderr)
            return None
        fail(str(err))


def _answered(work: Work, run_dir: Path, module: str, resume_flag: str) -> Optional[float]:
    try:
        return work(run_dir)
    except Interrupted as stop:
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("resume=", "hydra.run.dir="))]
        print(f"interrupted by {stop}. Resume with:\n  python -m {module} {' '.join(overrides)} "
              f"hydra.run.dir={run_dir}{' ' + resume_flag if resume_flag else ''}", file=sys.stderr)
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
