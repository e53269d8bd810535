"""`python -m mindprint.run [overrides] [-m]`: compose the config, build the models, train (or dry-run)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import hydra
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mindprint import checkpoint, config
from mindprint.data import load_prompts
from mindprint.distributed import configure_deepspeed, make_accelerator, no_zero3_init
from mindprint.errors import TrainingStopped, one_line
from mindprint.models import build_models, pick_device, use_tf32
from mindprint.hostmem import peak_rss_gib
from mindprint.report import count_parameters, lora_formula, print_models, print_summary, summarise
from mindprint.rewards import build_scorer
from mindprint.signals import Interrupted
from mindprint.sweep import is_multirun, record_failure, run_identity, run_objective
from mindprint.tracking import Tracker, jsonable, read_metrics, truncate_log
from mindprint.trainer import PPOTrainer

config.register()


def quiet_libraries() -> None:
    """Keep the console for our table, progress bar and summary: library chatter at error level only.

    The value model's freshly initialised score head is by design, so transformers' load report
    about it is noise here. TRANSFORMERS_VERBOSITY=info brings it all back.
    """
    import datasets
    import transformers

    if "TRANSFORMERS_VERBOSITY" not in os.environ:
        transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # bitsandbytes logs, on every 8-bit matmul, that fp32 inputs are cast to fp16.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # Offline, huggingface_hub logs every retry before from_pretrained fails; our one-line error says it all.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

# What Hydra writes into a run directory before our code runs; a run that fails on bad input
# before writing anything of its own leaves no directory behind.
HYDRA_ONLY = {".hydra", "run.log"}


def model_names(cfg: config.RunConfig) -> dict[str, str]:
    return {
        "model": cfg.model.name,
        "value": cfg.model.value_name or cfg.model.name,
        "reward": cfg.reward.name if cfg.reward.name else f"rule {cfg.reward.rule}",
    }


def execute(cfg: config.RunConfig, run_dir: Path, group: str = "mindprint", name: str = "run") -> dict:
    """Build everything from `cfg`; dry-run: print the model table; else train, summarise, save."""
    device = pick_device(cfg.device)
    use_tf32(cfg.model.tf32)
    accelerator = make_accelerator(device)
    configure_deepspeed(accelerator, cfg.ppo)  # before anything is written: it may refuse the config
    run_dir = shared_run_dir(accelerator, run_dir)
    resume_from, state = prepare_run_dir(cfg, run_dir, accelerator)
    set_seed(cfg.seed, device_specific=True)  # per-process seeds derive from `seed`
    with no_zero3_init(accelerator):
        models = build_models(cfg, accelerator.device)
    prompts = load_prompts(cfg.data, models.tokenizer, cfg.seed)
    scorer = build_scorer(cfg.reward, models.reward, models.reward_tokenizer)
    if cfg.dry_run:
        if accelerator.is_main_process:
            print_models(models, model_names(cfg))
            print(f"prompts: {len(prompts.train)} train, {len(prompts.eval)} held out, {prompts.skipped} skipped")
        return {}
    rank, span = lora_formula(models.policy)
    facts = {"name": name, "group": group, "lora/rank": rank, "lora/trainable_params": rank * span,
             "value/trainable_params": count_parameters(models.value)[1], "prompts/skipped": prompts.skipped}
    tracker = None
    if accelerator.is_main_process:
        wandb_id = state["wandb_id"] if state else None
        tracker = Tracker(run_dir, cfg.logger, {**dataclasses.asdict(cfg), **facts}, group, name, wandb_id)
    trainer = PPOTrainer(cfg, models, prompts, scorer, run_dir, accelerator, tracker)
    if state is not None:
        trainer.load_state_dict(state, resume_from)
        trainer.history = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
        print(f"resumed from {resume_from} (iteration {trainer.iteration} of {cfg.ppo.steps})")
    exit_code = 1
    try:
        start, first_episode = time.perf_counter(), trainer.episode
        history = trainer.train()
        wall = time.perf_counter() - start
        summary = {**facts, **summarise(history, wall, trainer.episode - first_episode)}
        if (rss := peak_rss_gib()) is not None:
            summary["peak_rss_gib"] = rss
        exit_code = 0
    finally:
        if tracker is not None:
            tracker.finish(exit_code)
        # Processes that exit with their process group alive can abort in gloo's threads at shutdown
        # ("terminate called without an active exception"); a local call, no collective.
        accelerator.end_training()
    if accelerator.is_main_process:
        (run_dir / "summary.json").write_text(json.dumps({k: jsonable(v) for k, v in summary.items()}, indent=1))
        print_summary(summary)
        print(f"run directory: {run_dir}")
    return summary


def shared_run_dir(accelerator: Accelerator, run_dir: Path) -> Path:
    """Under `accelerate launch` every process composes its own Hydra config, and `${now:}` may tick
    between them: all processes write to the main process's directory, and a stray one is removed."""
    if accelerator.num_processes == 1:
        return run_dir
    shared = Path(broadcast_object_list([str(run_dir)])[0])
    if shared != run_dir and {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def prepare_run_dir(
    cfg: config.RunConfig, run_dir: Path, accelerator: Accelerator
) -> tuple[Optional[Path], Optional[dict]]:
    """For resume=true: the newest checkpoint and its state, logs cut back to it. Else: refuse to mix two runs."""
    if not cfg.resume:
        if (run_dir / "metrics.jsonl").exists():
            raise config.ConfigError(
                f"hydra.run.dir={str(run_dir)!r} is not allowed: it already holds a run; add resume=true to "
                "continue it, or choose another directory"
            )
        return None, None
    path = checkpoint.latest(run_dir)
    if path is None:
        raise config.ConfigError(
            f"resume=true is not allowed: no checkpoint in {run_dir / checkpoint.CHECKPOINTS} "
            "(expected hydra.run.dir of a run that saved one)"
        )
    state = checkpoint.load_state(path)
    changes = checkpoint.config_changes(state["config"], dataclasses.asdict(cfg))
    if changes:
        raise config.ConfigError(
            f"resume=true is not allowed: {path.name} was written by a different config ({'; '.join(changes)})"
        )
    if accelerator.is_main_process:
        for log in ("metrics.jsonl", "samples.jsonl"):  # lines past the checkpoint are redone, never doubled
            truncate_log(run_dir / log, state["iteration"])
    accelerator.wait_for_everyone()
    return path, state


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: list[str]) -> config.RunConfig:
    """The RunConfig that `python -m mindprint.run OVERRIDES` would run, without running it."""
    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra.compose("config", overrides=overrides)
    return OmegaConf.to_object(cfg)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    """Returns the run's objective (`objective.*`), the float a sweeper such as Optuna maximises."""
    quiet_libraries()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run_cfg: config.RunConfig = OmegaConf.to_object(cfg)
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
        if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
            shutil.rmtree(run_dir, ignore_errors=True)
        fail(message, 1 if isinstance(err, TrainingStopped) else 2)


def user_mistake(err: Exception):
    """The one-line message if `err` is a user mistake (and MINDPRINT_FULL_ERROR=1 does not ask for the traceback)."""
    return None if os.environ.get("MINDPRINT_FULL_ERROR") == "1" else one_line(err)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and an exit code (2: a user mistake); SystemExit passes through Hydra's job runner."""
    if os.environ.get("RANK", "0") == "0":  # launched on N processes, all fail alike: say it once
        print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextmanager
def one_line_errors():
    """Inside a Hydra job: a user mistake becomes one line on stderr and exit code 2."""
    try:
        yield
    except Exception as err:
        message = user_mistake(err)
        if message is None:
            raise
        fail(message)


def cli(hydra_entry) -> None:
    """Run a @hydra.main entry point with composition errors (unknown key, bad type...) as one line, exit 2."""
    # Hydra's own report of a composition error spans several lines; take the exception instead.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    with one_line_errors():
        hydra_entry()


def main() -> None:
    cli(hydra_main)


if __name__ == "__main__":
    main()
