"""The loop on accelerate, one iteration at a time:

    prompts ─▶ rollout (rollout.Actor: generate; old, reference log-probs; values with a critic; scores)
            ─▶ estimator (estimators.estimate: the algorithm's advantages [, returns])
            ─▶ update (update.Learner: ppo_epochs × minibatches, one optimizer step each)
            ─▶ log (metrics.jsonl, W&B, the progress bar) ─▶ checkpoint (checkpoint.py)
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from peft import set_peft_model_state_dict
from safetensors.torch import save_file
from tqdm.auto import tqdm

from mindprint.algorithms import estimators, ppo
from mindprint.config import GROUP_BASELINES, ConfigError, RunConfig
from mindprint.engine import checkpoint, distributed
from mindprint.engine.data import Prompt, PromptSampler, PromptSet
from mindprint.engine.models import Models
from mindprint.engine.rewards import Scorer, build_judges, load_style
from mindprint.engine.rollout import Actor, Rollout, Timer, chunks
from mindprint.engine.signals import Interrupted, StopSignals
from mindprint.engine.tracking import Tracker
from mindprint.engine.update import Learner
from mindprint.errors import TrainingStopped

ROLLOUT_PHASES = ("generate", "reference", "value", "reward")


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        models: Models,
        prompts: PromptSet,
        scorer: Scorer,
        run_dir: Path,
        accelerator: Accelerator,
        tracker: Optional[Tracker] = None,  # None on processes other than the main one
    ):
        self.cfg, self.p, self.algo = cfg, cfg.ppo, cfg.algo
        self.models, self.prompts = models, prompts
        self.run_dir, self.accelerator = run_dir, accelerator
        self.device = accelerator.device
        # Each process draws its own prompts; process 0's stream is the single-process one.
        self.sampler = PromptSampler(
            prompts.train, self.p.steps_per_topic, cfg.data.shuffle, cfg.seed + accelerator.process_index
        )
        self.learner = Learner(cfg, models, accelerator)
        self.actor = Actor(cfg, models, scorer, accelerator, self.learner.model, self.learner.policy,
                           self.learner.value)
        self.kl_coef = self.p.init_kl_coef
        self.iteration = 0
        self.episode = 0
        self.skipped_updates = 0  # iterations whose update was skipped for NaN/Inf
        self.elapsed_before = 0.0  # training seconds of this run's earlier sessions (a checkpoint carries them)
        self.session_start = time.perf_counter()
        self.bad_streak = 0
        self.tracker = tracker
        self.judges = build_judges(cfg.eval, self.device)  # eval.scorers: logged as eval/NAME
        self.style = load_style(cfg.eval.style) if cfg.eval.style else None  # eval/style_delta
        self.history: list[dict] = []

    def elapsed_s(self) -> float:
        """Seconds of training of this run so far: earlier sessions' (up to their last checkpoint) and this one's."""
        return self.elapsed_before + time.perf_counter() - self.session_start

    def prompt_batch(self) -> list[Prompt]:
        """ppo.batch_size episodes: batch_size / G prompts, each repeated G times in a row (a group)."""
        G = self.algo.group_size
        return [p for p in self.sampler.batch(self.iteration, self.p.batch_size // G) for _ in range(G)]

    def estimate(self, r: Rollout) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(per-token KL, advantages, returns or None) of the configured algorithm; batch-wide statistics are
        taken over every process's rows."""
        return estimators.estimate(self.algo, self.p, r.scores, r.logprobs, r.ref_logprobs, r.values, r.mask,
                                   self.kl_coef, lambda x: distributed.sum_all(self.accelerator, x))

    def step(self) -> dict[str, float]:
        timer = Timer()
        start = time.perf_counter()
        lr = self.learner.scheduler.get_last_lr()[0]  # the rate this iteration's update uses (it steps after)
        r = self.actor.rollout(self.prompt_batch(), timer)
        kl, adv, returns = self.estimate(r)
        inputs = [x for x in (r.scores, adv, returns) if x is not None]
        train_stats, skipped = {}, True
        if distributed.everywhere(self.accelerator, all(bool(torch.isfinite(x).all()) for x in inputs)):
            with timer("update"):
                train_stats, skipped = self.learner.update(r, adv, returns, self.kl_coef)
        else:
            self.learner.scheduler.step()  # the schedule counts iterations, updated or not
        self.skipped_updates += int(skipped)
        self.bad_streak = self.bad_streak + 1 if skipped else 0
        metrics = self.log_metrics(r, kl, train_stats, lr, timer, start)
        if self.p.adaptive_kl and math.isfinite(metrics["objective/kl"]):
            episodes = self.p.batch_size * self.accelerator.num_processes
            self.kl_coef = ppo.adaptive_kl_coef(self.kl_coef, metrics["objective/kl"], self.p.target_kl, episodes,
                                                self.p.horizon)
        return metrics

    def log_metrics(self, r: Rollout, kl: torch.Tensor, train_stats: dict, lr: float, timer: Timer,
                    start: float) -> dict[str, float]:
        """The iteration's metrics, TRL's names. Only per-episode vectors cross processes: response lengths
        may differ between them."""
        gather = self.accelerator.gather
        lengths = gather(r.mask.sum(1))
        kl_sum = gather(((r.logprobs - r.ref_logprobs) * r.mask).sum(1))  # k1, as the controller reads it
        # the KL penalty in the reward; with algo.kl_in=loss it is in the loss (policy/kl_penalty_avg) instead
        in_reward = self.kl_coef if self.algo.kl_in == "reward" else 0.0
        non_score = gather((-in_reward * kl).sum(1))
        scores = gather(r.scores)
        n_episodes = len(scores)
        self.episode += n_episodes
        metrics = {
            "objective/kl": kl_sum.mean().item(),
            "objective/entropy": gather((-r.logprobs * r.mask).sum(1)).mean().item(),
            "objective/non_score_reward": non_score.mean().item(),
            "objective/rlhf_reward": (scores + non_score).mean().item(),
            "objective/scores": scores.mean().item(),
            "objective/scores_std": scores.std().item() if n_episodes > 1 else 0.0,
            "objective/kl_coef": self.kl_coef,
            **train_stats,
            "val/num_eos_tokens": int(gather(self.actor.ended(r.responses, r.mask).long()).sum().item()),
            "env/response_length": lengths.mean().item(),
            "lr": lr,
            "episode": self.episode,
            "perf/tokens_per_s": lengths.sum().item() / (time.perf_counter() - start),
            "time/rollout_s": sum(timer.seconds.get(k, 0.0) for k in ROLLOUT_PHASES),
            **{f"time/{k}_s": v for k, v in timer.seconds.items()},
            "health/skipped_updates": self.skipped_updates,
        }
        if self.algo.name in GROUP_BASELINES:  # TRL's name: the share of groups that teach nothing
            metrics["frac_reward_zero_std"] = gather(estimators.zero_spread(r.scores, self.algo.group_size).float()
                                                     ).mean().item()
        if self.device.type == "cuda":
            metrics["perf/peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return metrics

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], list[dict]]:
        """Held-out prompts at ppo.eval_temperature: mean score, exact KL per sequence, and a few samples; the extra
        judges' mean scores (eval.scorers) and the generations' style distance to the author (eval.style)."""
        prompts = self.prompts.eval
        if not prompts:
            return {}, []
        actor = self.actor
        actor.policy.eval()
        temp = self.p.eval_temperature or 1.0
        scores, kls, samples = [], [], []
        for s in chunks(len(prompts), self.p.batch_size):
            chunk = prompts[s]
            episodes = actor.generate(chunk, self.p.eval_temperature)
            kl = actor.batched(lambda rows: actor.exact_kl(rows, temp), episodes)
            texts = actor.decode(episodes.responses, episodes.mask)
            sc = actor.score(chunk, texts, episodes.responses, episodes.mask)
            scores.append(sc)
            kls.append((kl * episodes.mask).sum(1))
            samples += [{"prompt": p.text, "response": t, "score": float(v)} for p, t, v in zip(chunk, texts, sc)]
        metrics = {"eval/scores": torch.cat(scores).mean().item(), "eval/kl": torch.cat(kls).mean().item()}
        texts = [s["response"] for s in samples]
        for name, judge in self.judges.items():
            metrics[f"eval/{name}"] = judge([p.text for p in prompts], texts).mean().item()
        if self.style is not None:
            metrics["eval/style_delta"] = self.style.distance(texts)
        return metrics, samples[: self.p.num_sample_generations]

    def train(self, progress: bool = True) -> list[dict]:
        self.session_start = time.perf_counter()
        episodes_at_start = self.episode
        # None: no bar when stderr is not a terminal (a log file, a SLURM job), where it would only add noise
        bar = tqdm(total=self.p.steps, initial=self.iteration, desc=self.algo.name.upper(),
                   disable=True if not (progress and self.accelerator.is_main_process) else None)
        try:
            self.loop(bar, episodes_at_start)
        except BaseException:
            bar.leave = False  # an error's one line should not follow a half-drawn bar on the same line
            raise
        finally:
            bar.close()
        self.save()
        return self.history

    def loop(self, bar, episodes_at_start: int) -> None:
        """Iterations until ppo.steps: step, evaluate when due, log, checkpoint, stop on signals or bad updates."""
        with StopSignals() as signals:
            while self.iteration < self.p.steps:
                metrics = {"iteration": self.iteration + 1, **self.step()}
                # eps: this session's speed; time/elapsed_s: the run's clock, which a resume continues
                metrics["eps"] = (self.episode - episodes_at_start) / (time.perf_counter() - self.session_start)
                metrics["time/elapsed_s"] = self.elapsed_s()
                self.iteration += 1
                last = self.iteration == self.p.steps
                if last or (self.p.eval_every and self.iteration % self.p.eval_every == 0):
                    eval_metrics, samples = self.evaluate()
                    metrics.update(eval_metrics)
                    if self.tracker is not None:
                        self.tracker.log_samples(samples, self.iteration)
                self.history.append(metrics)
                if self.tracker is not None:
                    self.tracker.log(metrics, self.iteration)
                bar.update(1)
                bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
                if self.bad_streak >= self.p.max_bad_updates:
                    good = checkpoint.latest(self.run_dir)
                    raise TrainingStopped(
                        f"stopped at iteration {self.iteration}: {self.bad_streak} updates in a row had NaN or Inf "
                        f"in scores, advantages or losses (ppo.max_bad_updates={self.p.max_bad_updates}); "
                        f"last good checkpoint: {good or 'none'}"
                    )
                every = self.cfg.checkpoint.every
                if self.bad_streak == 0 and every and (self.iteration % every == 0 or last):
                    self.checkpoint()
                # All processes stop together, whichever got the signal: checkpoint() is collective.
                if not distributed.everywhere(self.accelerator, signals.received is None):
                    path = self.checkpoint() if self.bad_streak == 0 else checkpoint.latest(self.run_dir)
                    raise Interrupted(signals.received or signal.SIGTERM, self.iteration, path)

    # ------------------------------------------------------------ the run's state (its files: checkpoint.py)

    def trained_weights(self) -> tuple[dict[str, torch.Tensor], Optional[dict[str, torch.Tensor]]]:
        """(LoRA, the value model's trainable tensors or None without a critic) on the CPU, whole even under ZeRO-3
        (every process must call)."""
        named = lambda m: [(n, p) for n, p in m.named_parameters() if p.requires_grad]  # noqa: E731
        value_model = self.models.value
        policy, value = named(self.models.policy), named(value_model) if value_model is not None else []
        with distributed.gathered(self.accelerator, [p for _, p in policy + value]):
            lora = {n: p.detach().contiguous().cpu().clone() for n, p in policy}
            weights = {n: p.detach().contiguous().cpu().clone() for n, p in value} if value_model is not None else None
        return lora, weights

    def state_dict(self) -> dict[str, Any]:
        """What all processes share (the main process saves it): counters, β, the clock, the learner's state."""
        return {
            "iteration": self.iteration,
            "episode": self.episode,
            "kl_coef": self.kl_coef,
            "skipped_updates": self.skipped_updates,
            "elapsed_s": self.elapsed_s(),
            **self.learner.state_dict(),
            "num_processes": self.accelerator.num_processes,
            "wandb_id": self.tracker.wandb_id if self.tracker is not None else None,
            "config": dataclasses.asdict(self.cfg),
        }

    def process_state_dict(self) -> dict[str, Any]:
        """What differs between processes: their prompts and random streams (and DeepSpeed's optimizer shard)."""
        return {**self.learner.process_state_dict(), "sampler": self.sampler.state_dict(),
                "rng": checkpoint.rng_state()}

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        """Continue exactly where `state` (and the files beside it in the checkpoint `path`) left off."""
        acc = self.accelerator
        if state["num_processes"] != acc.num_processes:
            raise ConfigError(
                f"resume=true is not allowed with {acc.num_processes} processes: {path.name} was "
                f"written by {state['num_processes']} (launch the same number)"
            )
        params = [p for p in self.learner.model.parameters() if p.requires_grad]
        with distributed.gathered(acc, params, modifier_rank=0):
            set_peft_model_state_dict(self.models.policy, checkpoint.load_adapter_weights(path))
            if self.models.value is not None:
                missing = self.models.value.load_state_dict(checkpoint.load_value_weights(path), strict=False)
                assert not missing.unexpected_keys, missing.unexpected_keys
        self.iteration, self.episode = state["iteration"], state["episode"]
        self.kl_coef, self.skipped_updates = state["kl_coef"], state["skipped_updates"]
        # checkpoints written before the run's clock was kept lack it: the resumed clock then starts at the resume
        self.elapsed_before = state.get("elapsed_s", 0.0)
        mine = checkpoint.load_state(path, checkpoint.process_file(acc.process_index))
        self.learner.load_state_dict(state, mine, path.name)
        self.sampler.load_state_dict(mine["sampler"])
        checkpoint.set_rng_state(mine["rng"])

    def checkpoint(self) -> Optional[Path]:
        """Save a checkpoint now (collective: every process calls); returns the newest good one. A state with NaN/Inf
        weights is never saved."""
        lora, weights = self.trained_weights()
        if not (checkpoint.all_finite(lora) and (weights is None or checkpoint.all_finite(weights))):
            return checkpoint.latest(self.run_dir)  # the same on every process: all skip together
        saver = lambda directory: self.models.policy.save_pretrained(directory, state_dict=lora)  # noqa: E731
        return checkpoint.save(self.run_dir, self.iteration, self.accelerator, self.state_dict(),
                               self.process_state_dict(), lora, saver, weights, self.cfg.checkpoint.keep)

    def save(self) -> None:
        """The run's outputs: the adapter (peft format) and, with a critic, the value model's trained weights."""
        self.accelerator.wait_for_everyone()
        lora, weights = self.trained_weights()
        if self.accelerator.is_main_process:
            self.models.policy.save_pretrained(self.run_dir / "adapter", state_dict=lora)
            if weights is not None:
                save_file(weights, str(self.run_dir / checkpoint.VALUE_WEIGHTS))
