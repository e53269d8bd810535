"""One run from a typed RunConfig: build the four models and the prompts, then dry-run or train and summarise.

The engine behind `python -m mindprint.run`, imported only once the config is valid (it pulls in torch,
transformers, peft, accelerate and DeepSpeed, which take seconds to import).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed

from mindprint import config
from mindprint.console import hide_progress_bars
from mindprint.engine import checkpoint
from mindprint.engine.data import load_prompts
from mindprint.engine.distributed import configure_deepspeed, make_accelerator, no_zero3_init
from mindprint.engine.hostmem import peak_rss_gib
from mindprint.engine.models import build_models, pick_device, use_tf32
from mindprint.engine.report import count_parameters, lora_formula, print_models, print_summary, summarise
from mindprint.engine.rewards import build_scorer
from mindprint.engine.tracking import Tracker
from mindprint.engine.trainer import Trainer
from mindprint.records import METRICS, SAMPLES, cut_short, hydra_only, jsonable, read_metrics, truncate_log


def model_names(cfg: config.RunConfig) -> dict[str, str]:
    return {
        "model": cfg.model.name,
        "value": cfg.model.value_name or cfg.model.name if cfg.algo.critic else f"none (algo={cfg.algo.name} is critic-free)",
        "reward": cfg.reward.name if cfg.reward.name else f"rule {cfg.reward.rule}",
    }


def execute(cfg: config.RunConfig, run_dir: Path, group: str = "mindprint", name: str = "run") -> dict:
    """Build everything from `cfg`; dry-run: print the model table; else train, summarise, save."""
    hide_progress_bars()
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
             "value/trainable_params": count_parameters(models.value)[1] if models.value is not None else 0,
             "algo": cfg.algo.name, "critic": cfg.algo.critic, "prompts/skipped": prompts.skipped}
    tracker = None
    if accelerator.is_main_process:
        wandb_id = state["wandb_id"] if state else None
        tracker = Tracker(run_dir, cfg.logger, {**dataclasses.asdict(cfg), **facts}, group, name, wandb_id)
    trainer = Trainer(cfg, models, prompts, scorer, run_dir, accelerator, tracker)
    if state is not None:
        trainer.load_state_dict(state, resume_from)
        trainer.history = read_metrics(run_dir / METRICS) if (run_dir / METRICS).exists() else []
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
    if shared != run_dir and hydra_only(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def prepare_run_dir(
    cfg: config.RunConfig, run_dir: Path, accelerator: Accelerator
) -> tuple[Optional[Path], Optional[dict]]:
    """For resume=true: the newest intact checkpoint and its state, logs cut back to it (a warning line for each
    damaged checkpoint skipped). Else: refuse to mix two runs."""
    if not cfg.resume:
        if (run_dir / METRICS).exists():
            raise config.ConfigError(
                f"hydra.run.dir={str(run_dir)!r} is not allowed: it already holds a run; add resume=true to "
                "continue it, or choose another directory"
            )
        return None, None
    try:  # every file of it, before anything of it is used
        path, _, damaged = checkpoint.newest_intact(run_dir)
        state = checkpoint.load_state(path) if path is not None else None
    except checkpoint.CheckpointRefused as err:
        raise config.ConfigError(f"resume=true is not allowed: {err}") from None
    if path is None:
        root = run_dir / checkpoint.CHECKPOINTS
        if damaged:
            raise config.ConfigError(
                f"resume=true is not allowed: every checkpoint in {root} is damaged "
                f"({checkpoint.all_damaged(damaged)}); restore them from a copy, or start a new run directory"
            )
        raise config.ConfigError(
            f"resume=true is not allowed: no checkpoint in {root} (expected hydra.run.dir of a run that saved one)"
        )
    if accelerator.is_main_process:
        for err in damaged:
            print(f"warning: {err}; resuming from {path.name}", file=sys.stderr)
    saved = state["config"]
    if saved.get("reward", {}).get("rule") in config.MOVED_RULES:  # written before the rule moved: the same rule
        saved = {**saved, "reward": {**saved["reward"], "rule": config.MOVED_RULES[saved["reward"]["rule"]]}}
    changes = checkpoint.config_changes(saved, dataclasses.asdict(cfg))
    if changes:
        raise config.ConfigError(
            f"resume=true is not allowed: {path.name} was written by a different config ({'; '.join(changes)})"
        )
    if accelerator.is_main_process:
        for log in (METRICS, SAMPLES):  # lines past the checkpoint are redone, never doubled
            if cut_short(run_dir / log):
                print(f"warning: the last line of {run_dir / log} was cut short (the run was stopped while writing "
                      f"it); dropped, with every line past {path.name}", file=sys.stderr)
            truncate_log(run_dir / log, state["iteration"])
    accelerator.wait_for_everyone()
    return path, state
