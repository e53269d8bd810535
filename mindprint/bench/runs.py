"""One benchmark run in a fresh process: mindprint through its CLI, TRL through the scripts beside this module
(trl_ppo.py: 1.12's PPOTrainer, from its own venv; trl_grpo.py: 1.16's GRPOTrainer and RLOOTrainer)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from mindprint.config import RunConfig
from mindprint.engine.tracking import read_metrics

SCRIPTS = Path(__file__).resolve().parent  # trl_ppo.py and trl_grpo.py ship here, in the package
PHASES = ("generate", "reference", "value", "reward", "update")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def run_mindprint(overrides: list[str], run_dir: Path) -> dict:
    """episodes/s, wall time, phase shares, seconds of generation per iteration, peak host memory and (on a
    GPU) peak GPU memory of `python -m mindprint.run OVERRIDES`."""
    proc = subprocess.run([sys.executable, "-m", "mindprint.run", *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mindprint run failed: {last_line(proc.stderr)}")
    summary = json.loads((run_dir / "summary.json").read_text())
    # the last iteration's `eps` counts training only, as TRL's timing does: not the adapter and value
    # weights saved at the end (gigabytes at real shapes)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    # generation after the first iteration, which pays any one-off cost (ppo.kv_cache=static: the compile)
    later = [m["time/generate_s"] for m in metrics[1:]] or [metrics[0]["time/generate_s"]]
    out = {"episodes_per_s": metrics[-1]["eps"], "wall_s": summary["wall_s"],
           "phases": {p: summary[f"share/{p}"] for p in PHASES}, "generate_s": statistics.median(later)}
    for key in ("peak_mem_gib", "peak_rss_gib"):
        if key in summary:
            out[key] = summary[key]
    return out


def trl_batching(batch: int, mini: int, micro: int) -> dict:
    """TRL 1.12 PPOConfig batch arguments for mindprint's (batch, minibatch, micro-batch), per process.

    TRL's arithmetic: batch = per_device_train_batch_size × gradient_accumulation_steps, split into
    num_mini_batches minibatches walked in micro-batches of min(per_device_train_batch_size, minibatch),
    with an optimizer step every gradient_accumulation_steps micro-batches. So one step per minibatch,
    as PPO (and mindprint) takes, is only expressible when micro == mini: per_device = batch, no
    accumulation. Otherwise TRL keeps the micro-batch but steps once per epoch, over the whole batch.
    """
    if micro == mini:
        per_device, accumulation, steps = batch, 1, batch // mini
    else:
        per_device, accumulation, steps = micro, batch // micro, 1
    return {"per_device_train_batch_size": per_device, "gradient_accumulation_steps": accumulation,
            "num_mini_batches": batch // mini, "optimizer_steps_per_epoch": steps}


def trl_setup(cfg: RunConfig, device: str, bf16: bool) -> dict:
    """The settings trl_ppo.py needs to train what `cfg` trains."""
    p = cfg.ppo
    return dict(
        policy=cfg.model.name, reward=cfg.reward.name, reward_quantization=cfg.reward.quantization, prompts=cfg.data.name,
        chat_template=cfg.data.apply_chat_template, batch_size=p.batch_size, mini_batch_size=p.mini_batch_size,
        micro_batch_size=p.micro_batch_size, rollout_batch_size=p.rollout_batch_size, ppo_epochs=p.ppo_epochs,
        steps=p.steps, response_length=p.response_length, temperature=p.temperature, learning_rate=p.learning_rate,
        kl_coef=p.init_kl_coef, lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
        target_modules=list(cfg.lora.target_modules), seed=cfg.seed, device=device, bf16=bf16,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        trl=trl_batching(p.batch_size, p.mini_batch_size, p.micro_batch_size),
    )


def trl_critic_free_setup(cfg: RunConfig, device: str = "cpu") -> dict:
    """The settings trl_grpo.py needs to train, with TRL 1.16's GRPOTrainer (algo=grpo, dr_grpo) or
    RLOOTrainer (algo=rloo), what `cfg` trains."""
    p, a = cfg.ppo, cfg.algo
    setup = dict(
        trainer="rloo" if a.name == "rloo" else "grpo", policy=cfg.model.name, reward=cfg.reward.name,
        prompts=cfg.data.name, prompt_field=cfg.data.prompt_field, chat_template=cfg.data.apply_chat_template,
        num_generations=a.group_size, batch_size=p.batch_size, mini_batch_size=p.mini_batch_size,
        micro_batch_size=p.micro_batch_size, ppo_epochs=p.ppo_epochs, steps=p.steps, response_length=p.response_length,
        temperature=p.temperature, learning_rate=p.learning_rate, lr_scheduler=p.lr_scheduler,
        weight_decay=p.weight_decay, max_grad_norm=p.max_grad_norm, beta=p.init_kl_coef, cliprange=p.cliprange,
        lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha, target_modules=list(cfg.lora.target_modules),
        seed=cfg.seed, device=device, bf16=False, gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    if a.name != "rloo":
        setup.update(loss_type=a.loss_aggregation, scale_rewards="group" if a.name == "grpo" else "none")
    return setup


def run_trl(setup: dict, python: Path, script: str = "trl_ppo.py") -> dict:
    """episodes/s, wall time, time in gc, peak host memory (and on a GPU peak GPU memory) of TRL on `setup`:
    1.12's PPOTrainer (trl_ppo.py, from its own venv), or 1.16's GRPOTrainer or RLOOTrainer (trl_grpo.py)."""
    proc = subprocess.run([str(python), str(SCRIPTS / script), json.dumps(setup)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"TRL run failed: {last_line(proc.stderr)}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith('{"episodes_per_s"')][-1])
