"""The PPO loop on accelerate: rollout → score → KL-penalised rewards → GAE → clipped updates."""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from peft import set_peft_model_state_dict
from safetensors.torch import save_file
from torch.nn.utils import clip_grad_norm_
from tqdm.auto import tqdm
from transformers import GenerationConfig, get_scheduler

from mindprint import checkpoint, distributed, ppo
from mindprint.config import ConfigError, RunConfig
from mindprint.errors import TrainingStopped
from mindprint.data import Prompt, PromptSampler, PromptSet
from mindprint.models import Models, PolicyAndValue, TokenValueModel
from mindprint.rewards import Scorer
from mindprint.signals import Interrupted, StopSignals
from mindprint.tracking import Tracker


@dataclass
class Rollout:
    prompts: list[Prompt]
    texts: list[str]  # decoded responses, cut at the first stop token
    queries: torch.Tensor  # B × Lq, left-padded
    query_mask: torch.Tensor
    responses: torch.Tensor  # B × T, padded after the first stop token
    mask: torch.Tensor  # B × T float: real response tokens
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor  # B

    def rows(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "queries": self.queries[idx],
            "query_mask": self.query_mask[idx],
            "responses": self.responses[idx],
            "mask": self.mask[idx],
        }


class TokenStats:
    """Weighted averages over an update: per-token statistics weighted by their real tokens, so each is over
    real response tokens however micro-batches fall; losses and gradient norms weighted one per minibatch.

    Values are only collected as they come (no tensor work per add: on small models that adds up)
    and weighted, summed and reduced across processes once, at the end.
    """

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = {}
        self.tokens: dict[str, list[torch.Tensor]] = {}

    def add(self, name: str, value: torch.Tensor, tokens: torch.Tensor) -> None:
        self.values.setdefault(name, []).append(value.detach())
        self.tokens.setdefault(name, []).append(tokens)

    def averages(self, accelerator: Accelerator) -> dict[str, float]:
        out = {}
        for name, values in self.values.items():
            tokens = torch.stack(self.tokens[name]).float()
            pair = torch.stack([(torch.stack(values).float() * tokens).sum(), tokens.sum()])
            total = accelerator.reduce(pair, "sum")
            out[name] = (total[0] / total[1].clamp(min=1)).item()
        return out


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def response_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits/temperature at the states that produced each response token (of the last T+1 positions kept)."""
    return logits[:, :-1].float() / temperature


def response_values(values: torch.Tensor, T: int) -> torch.Tensor:
    """V(s_t) read at the token *before* a_t: the last prompt token for the first response token."""
    return values[:, -T - 1 : -1]


def drop_shared_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded rows without the leading columns that are padding in every row.

    Prompts are padded to the longest of the whole batch, and a chunk's rows are often all shorter. Padding
    is masked out of attention and positions count real tokens only, so what a forward or generate() gives
    for real tokens is the same, with fewer tokens to compute.
    """
    first = int(mask.any(0).int().argmax())  # first column some row uses (prompts are never empty)
    return ids[:, first:], mask[:, first:]


def sequence_inputs(queries, query_mask, responses, mask):
    """Prompt + response as one left-padded sequence (without shared padding); positions as generate() counts them."""
    queries, query_mask = drop_shared_padding(queries, query_mask)
    input_ids = torch.cat([queries, responses], dim=1)
    attention_mask = torch.cat([query_mask, mask.long()], dim=1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


class PPOTrainer:
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
        self.cfg, self.p = cfg, cfg.ppo
        self.models, self.prompts, self.scorer = models, prompts, scorer
        self.run_dir, self.accelerator = run_dir, accelerator
        self.device = accelerator.device
        # Each process draws its own prompts; process 0's stream is the single-process one.
        self.sampler = PromptSampler(
            prompts.train, self.p.steps_per_topic, cfg.data.shuffle, cfg.seed + accelerator.process_index
        )
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
        # Trainable tensors listed once: walking the module tree at every clip costs ~7% of an update on small models.
        self.policy_params = [p for p in models.policy.parameters() if p.requires_grad]
        self.value_params = [p for p in models.value.parameters() if p.requires_grad]
        # One AdamW, a parameter group per model (each its own learning rate): one optimizer step per
        # minibatch instead of two, and the single optimizer DeepSpeed accepts. fused: one kernel per group.
        optimizer = torch.optim.AdamW(
            [{"params": self.policy_params, "lr": self.p.learning_rate},
             {"params": self.value_params, "lr": self.p.value_learning_rate}],
            weight_decay=self.p.weight_decay,  # torch's default (0.01) would be a hidden regulariser
            fused=True,
        )
        # the schedule scales each group's own learning rate
        self.scheduler = get_scheduler(self.p.lr_scheduler, optimizer, num_warmup_steps=0,
                                       num_training_steps=self.p.steps)
        self.zero_stage = distributed.zero_stage(accelerator)
        self.model, self.optimizer = accelerator.prepare(
            PolicyAndValue(models.policy, TokenValueModel(models.value)), optimizer
        )
        # Rollout, reference and evaluation forwards need no gradient sync: they call the models directly.
        joint = accelerator.unwrap_model(self.model)
        self.policy, self.value = joint.policy, joint.value
        self.kl_coef = self.p.init_kl_coef
        self.iteration = 0
        self.episode = 0
        self.skipped_updates = 0  # iterations whose update was skipped for NaN/Inf
        self.bad_streak = 0
        self.tracker = tracker
        self.history: list[dict] = []

    # ---------------------------------------------------------------- rollout

    def generation_config(self, temperature: float) -> GenerationConfig:
        """What generate() samples with: our settings and nothing else.

        Plain temperature sampling (greedy at 0): no top-k, top-p or other logits processor, so the old
        log-probs, computed from logits/temperature, are the sampling distribution's. Every field is set
        here or is neutral in transformers' global defaults: the checkpoint's own generation config was
        replaced when the policy was built (models.build_policy), so a repetition_penalty or top_k that
        it ships cannot act.
        """
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else {}
        # One cache length for every call (prompts are at most data.max_prompt_length tokens), so the compiled
        # decoding step is compiled once, not again for each batch's longest prompt.
        cache = {}
        if self.p.kv_cache == "static":
            cache = dict(cache_implementation="static",
                         max_cache_len=self.cfg.data.max_prompt_length + self.p.response_length)
        return GenerationConfig(max_new_tokens=self.p.response_length, eos_token_id=self.models.stop_ids,
                                pad_token_id=self.models.tokenizer.pad_token_id, **sampling, **cache)

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], temperature: float) -> tuple[torch.Tensor, ...]:
        tok = self.models.tokenizer
        enc = tok([p.query for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        queries, query_mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        generation_config = self.generation_config(temperature)
        # In chunks of rollout_batch_size, as TRL's local_rollout_forward_batch_size: the KV cache and the
        # prefill's activations scale with the chunk, so a smaller one trades speed for memory.
        chunks = []
        with distributed.for_generation(self.accelerator, self.model):
            for rows in _chunks(len(prompts), self.p.rollout_batch_size):
                ids, ids_mask = drop_shared_padding(queries[rows], query_mask[rows])
                out = self.policy.generate(input_ids=ids, attention_mask=ids_mask, generation_config=generation_config)
                chunks.append(out[:, ids.shape[1] :])
        # a chunk whose rows all stopped early comes back shorter: padding after the stop is masked anyway
        width = max(c.shape[1] for c in chunks)
        responses = torch.cat([F.pad(c, (0, width - c.shape[1]), value=tok.pad_token_id) for c in chunks])
        mask = ppo.response_mask(responses, self.models.stop_ids)
        responses = torch.where(mask.bool(), responses, tok.pad_token_id)
        return queries, query_mask, responses, mask

    def logits(self, model, rows: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
        input_ids, attention_mask, position_ids = sequence_inputs(**rows)
        T = rows["responses"].shape[1]
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=T + 1,
            use_cache=False,
        )
        return response_logits(out.logits, temperature)

    def logprobs(self, model, rows: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
        """log π(a_t|s_t) of each response token from logits/temperature, as sampling drew them."""
        return ppo.logprobs_from_logits(self.logits(model, rows, temperature), rows["responses"])

    def train_forward(self, rows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Log-probs, entropy (no graph: only reported) and values of a micro-batch, both models in one call
        through the wrapper that syncs their gradients."""
        input_ids, attention_mask, position_ids = sequence_inputs(**rows)
        T = rows["responses"].shape[1]
        logits, values = self.model(input_ids, attention_mask, position_ids, T + 1)
        logits = response_logits(logits, self.p.temperature)
        logp = ppo.logprobs_from_logits(logits, rows["responses"])
        with torch.no_grad():
            entropy = ppo.entropy_from_logits(logits)
        return logp, entropy, response_values(values, T)

    def exact_kl(self, rows: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
        logits = self.logits(self.policy, rows, temperature)
        with self.models.reference_mode() as ref:
            ref_logits = self.logits(ref, rows, temperature)
        return ppo.kl_exact(logits, ref_logits)

    def values(self, model, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        input_ids, attention_mask, position_ids = sequence_inputs(**rows)
        return response_values(model(input_ids, attention_mask, position_ids), rows["responses"].shape[1])

    @torch.no_grad()
    def batched(self, fn, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        n = rows["responses"].shape[0]
        return torch.cat([fn({k: v[s] for k, v in rows.items()}) for s in _chunks(n, self.p.rollout_batch_size)])

    def decode(self, responses: torch.Tensor, mask: torch.Tensor) -> list[str]:
        tok = self.models.tokenizer
        return [tok.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(responses, mask)]

    def score(self, prompts: list[Prompt], texts: list[str], responses, mask) -> torch.Tensor:
        scores = self.scorer([p.text for p in prompts], texts).to(self.device)
        if self.p.missing_eos_penalty is not None:
            penalty = torch.full_like(scores, self.p.missing_eos_penalty)
            scores = torch.where(self.ended(responses, mask), scores, penalty)
        return scores

    def everywhere(self, ok: bool) -> bool:
        """True only if `ok` holds on every process, so all of them skip (or take) a step together."""
        flags = self.accelerator.reduce(torch.tensor([0.0 if ok else 1.0], device=self.device), "sum")
        return flags.item() == 0

    def ended(self, responses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per episode: did the response stop on a stop token (rather than the length limit)?"""
        stops = torch.tensor(self.models.stop_ids, device=responses.device)
        return (torch.isin(responses, stops) & mask.bool()).any(1)

    def rollout(self, prompts: list[Prompt], timer: Timer) -> Rollout:
        self.model.eval()
        with timer("generate"):
            queries, query_mask, responses, mask = self.generate(prompts, self.p.temperature)
        rows = {"queries": queries, "query_mask": query_mask, "responses": responses, "mask": mask}
        temp = self.p.temperature
        with timer("generate"):  # old log-probs belong to sampling: the same forward as training
            logprobs = self.batched(lambda r: self.logprobs(self.policy, r, temp), rows)
        with timer("reference"), self.models.reference_mode() as ref:
            ref_logprobs = self.batched(lambda r: self.logprobs(ref, r, temp), rows)
        with timer("value"):
            values = self.batched(lambda r: self.values(self.value, r), rows)
        with timer("reward"):
            texts = self.decode(responses, mask)
            scores = self.score(prompts, texts, responses, mask)
        return Rollout(prompts, texts, queries, query_mask, responses, mask, logprobs, ref_logprobs, values, scores)

    # ----------------------------------------------------------------- update

    def sum_all(self, x: torch.Tensor) -> torch.Tensor:
        """`x` summed over all processes (itself on one)."""
        return self.accelerator.reduce(x, "sum")

    def advantages(self, r: Rollout) -> tuple[torch.Tensor, ...]:
        """Per-token KL, whitened GAE advantages and returns; whitening statistics over every process's rows."""
        kl = ppo.kl_per_token(r.logprobs, r.ref_logprobs, self.p.kl_estimator) * r.mask
        rewards = ppo.token_rewards(r.scores, kl, r.mask, self.kl_coef)
        if self.p.whiten_rewards:
            rewards = ppo.masked_whiten(rewards, r.mask, shift_mean=False, sum_all=self.sum_all)
        adv, returns = ppo.gae(rewards, r.values, r.mask, self.p.gamma, self.p.lam)
        adv = ppo.masked_whiten(adv, r.mask, sum_all=self.sum_all)
        return kl, adv, returns

    def clip_gradients(self) -> list[torch.Tensor]:
        """Each model's gradient clipped to ppo.max_grad_norm on its own; returns the norms before clipping.

        torch's clip directly: accelerate's wrapper probes installed packages on every call (~0.2 ms,
        7% of a small model's update); under fp16 mixed precision the gradients are unscaled first.
        """
        self.accelerator.unscale_gradients()
        return [clip_grad_norm_(params, self.p.max_grad_norm, foreach=True)
                for params in (self.policy_params, self.value_params)]

    def step_optimizer(self) -> None:
        """torch's step directly where accelerate's would only call it: its wrapper probes installed packages
        twice per call (~0.5 ms, 2% of a small model's update). With a gradient scaler (fp16), accelerate's."""
        if self.optimizer.scaler is None:
            self.optimizer.optimizer.step()
        else:
            self.optimizer.step()

    def minibatch_gradients(self, r: Rollout, idx: torch.Tensor, adv: torch.Tensor, returns: torch.Tensor,
                            n_tokens: torch.Tensor, stats: TokenStats, first: bool) -> bool:
        """Accumulate the gradient of the minibatch `idx` in micro-batches; False if a loss was NaN/Inf on any
        process (that micro-batch is never backpropagated).

        Each micro-batch's loss is its token sum over `n_tokens`, the real tokens of the whole minibatch on all
        processes (`ppo.token_sum_over`), times the process count, which the all-reduce of DDP (or DeepSpeed)
        averages away. So the accumulated gradient is that of the minibatch's token mean, whatever the
        micro-batch size or the number of processes, and `loss/*` logs exactly what was differentiated.
        """
        scale = self.accelerator.num_processes
        pg_total = vf_total = torch.zeros((), device=self.device)
        for micro in _chunks(len(idx), self.p.micro_batch_size):
            rows = r.rows(idx[micro])
            mask = rows["mask"]
            logp, entropy, new_values = self.train_forward(rows)
            pg_loss, pg = ppo.policy_loss(logp, r.logprobs[idx[micro]], adv[idx[micro]], mask, self.p.cliprange,
                                          n_tokens)
            vf_loss, vf = ppo.value_loss(new_values, r.values[idx[micro]], returns[idx[micro]], mask,
                                         self.p.cliprange_value, n_tokens)
            loss = (pg_loss + self.p.vf_coef * vf_loss) * scale
            if not self.everywhere(bool(torch.isfinite(loss))):
                return False
            self.accelerator.backward(loss)
            pg_total, vf_total = pg_total + pg_loss.detach() * scale, vf_total + vf_loss.detach() * scale
            tokens = mask.sum()
            stats.add("policy/approxkl_avg", pg["approxkl"], tokens)
            stats.add("policy/clipfrac_avg", pg["clipfrac"], tokens)
            stats.add("policy/entropy_avg", ppo.masked_mean(entropy, mask), tokens)
            stats.add("val/clipfrac_avg", vf["clipfrac"], tokens)
            stats.add("val/ratio", pg["ratio"], tokens)
            if first:
                stats.add("val/ratio_first_minibatch", pg["ratio"], tokens)
        one = torch.ones((), device=self.device)
        stats.add("loss/policy_avg", pg_total, one)  # averaged over processes and minibatches
        stats.add("loss/value_avg", vf_total, one)
        return True

    def update(self, r: Rollout, adv: torch.Tensor, returns: torch.Tensor) -> tuple[dict[str, float], bool]:
        """ppo_epochs passes of minibatches; returns (averaged stats, whether any step was skipped).

        A micro-batch whose loss is NaN/Inf (on any process) is never backpropagated, and its minibatch
        takes no optimizer step; nor does one whose gradient norm is NaN/Inf. So no NaN ever reaches the
        weights or Adam's moments. Under DeepSpeed, which steps inside backward and clips the global norm
        itself, the loss check is the guard and `grad_norm` is DeepSpeed's global norm.
        """
        self.model.train()
        stats = TokenStats()
        skipped = False
        B = r.responses.shape[0]
        one = torch.ones((), device=self.device)
        for epoch in range(self.p.ppo_epochs):
            order = torch.randperm(B, generator=self.shuffle_gen).to(self.device)
            minibatches = [order[mb] for mb in _chunks(B, self.p.mini_batch_size)]
            # each minibatch's real tokens over all processes, in one collective per epoch
            n_tokens = self.sum_all(torch.stack([r.mask[idx].sum() for idx in minibatches]))
            for mb_index, idx in enumerate(minibatches):
                self.optimizer.zero_grad(set_to_none=True)
                first = epoch == 0 and mb_index == 0
                if not self.minibatch_gradients(r, idx, adv, returns, n_tokens[mb_index], stats, first):
                    skipped = True
                elif self.zero_stage:  # DeepSpeed has clipped and stepped inside backward
                    norm = torch.as_tensor(float(self.model.get_global_grad_norm()), device=self.device)
                    skipped |= not bool(torch.isfinite(norm))  # DeepSpeed skipped that step itself
                    stats.add("grad_norm", norm, one)
                else:
                    norms = self.clip_gradients()
                    if self.everywhere(all(bool(torch.isfinite(n)) for n in norms)):
                        self.step_optimizer()
                        stats.add("policy/grad_norm", norms[0], one)
                        stats.add("val/grad_norm", norms[1], one)
                    else:
                        skipped = True
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return stats.averages(self.accelerator), skipped

    # ------------------------------------------------------------- iteration

    def step(self) -> dict[str, float]:
        timer = Timer()
        start = time.perf_counter()
        lr = self.scheduler.get_last_lr()[0]  # the rate this iteration's update uses (the scheduler steps after it)
        batch = self.sampler.batch(self.iteration, self.p.batch_size)
        r = self.rollout(batch, timer)
        kl, adv, returns = self.advantages(r)
        inputs_finite = self.everywhere(all(bool(torch.isfinite(x).all()) for x in (r.scores, adv, returns)))
        train_stats, skipped = {}, True
        if inputs_finite:
            with timer("update"):
                train_stats, skipped = self.update(r, adv, returns)
        else:
            self.scheduler.step()  # the schedule counts iterations, updated or not
        self.skipped_updates += int(skipped)
        self.bad_streak = self.bad_streak + 1 if skipped else 0

        # Only per-episode vectors cross processes: response lengths may differ between them.
        gather = self.accelerator.gather
        lengths = gather(r.mask.sum(1))
        kl_sum = gather(((r.logprobs - r.ref_logprobs) * r.mask).sum(1))  # k1, as the controller reads it
        non_score = gather((-self.kl_coef * kl).sum(1))
        scores = gather(r.scores)
        n_episodes = len(scores)
        tokens = lengths.sum().item()
        self.episode += n_episodes
        elapsed = time.perf_counter() - start
        metrics = {
            "objective/kl": kl_sum.mean().item(),
            "objective/entropy": gather((-r.logprobs * r.mask).sum(1)).mean().item(),
            "objective/non_score_reward": non_score.mean().item(),
            "objective/rlhf_reward": (scores + non_score).mean().item(),
            "objective/scores": scores.mean().item(),
            "objective/scores_std": scores.std().item() if n_episodes > 1 else 0.0,
            "objective/kl_coef": self.kl_coef,
            **train_stats,
            "val/num_eos_tokens": int(gather(self.ended(r.responses, r.mask).long()).sum().item()),
            "env/response_length": lengths.mean().item(),
            "lr": lr,
            "episode": self.episode,
            "perf/tokens_per_s": tokens / elapsed,
            "time/rollout_s": sum(timer.seconds[k] for k in ("generate", "reference", "value", "reward")),
            **{f"time/{k}_s": v for k, v in timer.seconds.items()},
            "health/skipped_updates": self.skipped_updates,
        }
        if self.device.type == "cuda":
            metrics["perf/peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.p.adaptive_kl and math.isfinite(metrics["objective/kl"]):
            self.kl_coef = ppo.adaptive_kl_coef(
                self.kl_coef, metrics["objective/kl"], self.p.target_kl, n_episodes, self.p.horizon
            )
        return metrics

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], list[dict]]:
        """Held-out prompts at ppo.eval_temperature: mean score, exact KL per sequence, and a few samples."""
        prompts = self.prompts.eval
        if not prompts:
            return {}, []
        self.policy.eval()
        temp = self.p.eval_temperature or 1.0
        scores, kls, samples = [], [], []
        for s in _chunks(len(prompts), self.p.batch_size):
            chunk = prompts[s]
            queries, query_mask, responses, mask = self.generate(chunk, self.p.eval_temperature)
            rows = {"queries": queries, "query_mask": query_mask, "responses": responses, "mask": mask}
            kl = self.batched(lambda r: self.exact_kl(r, temp), rows)
            texts = self.decode(responses, mask)
            sc = self.score(chunk, texts, responses, mask)
            scores.append(sc)
            kls.append((kl * mask).sum(1))
            samples += [{"prompt": p.text, "response": t, "score": float(v)} for p, t, v in zip(chunk, texts, sc)]
        metrics = {"eval/scores": torch.cat(scores).mean().item(), "eval/kl": torch.cat(kls).mean().item()}
        return metrics, samples[: self.p.num_sample_generations]

    def train(self, progress: bool = True) -> list[dict]:
        run_start = time.perf_counter()
        episodes_at_start = self.episode
        bar = tqdm(total=self.p.steps, initial=self.iteration, desc="PPO",
                   disable=not (progress and self.accelerator.is_main_process))
        with StopSignals() as signals:
            while self.iteration < self.p.steps:
                metrics = {"iteration": self.iteration + 1, **self.step()}
                metrics["eps"] = (self.episode - episodes_at_start) / (time.perf_counter() - run_start)
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
                if not self.everywhere(signals.received is None):
                    path = self.checkpoint() if self.bad_streak == 0 else checkpoint.latest(self.run_dir)
                    raise Interrupted(signals.received or signal.SIGTERM, self.iteration, path)
        bar.close()
        self.save()
        return self.history

    # ------------------------------------------------------------ checkpoints

    def trained_weights(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(LoRA, value model) trainable tensors on the CPU, whole even under ZeRO-3 (every process must call)."""
        named = lambda m: [(n, p) for n, p in m.named_parameters() if p.requires_grad]  # noqa: E731
        policy, value = named(self.models.policy), named(self.models.value)
        with distributed.gathered(self.accelerator, [p for _, p in policy + value]):
            return tuple({n: p.detach().contiguous().cpu().clone() for n, p in group} for group in (policy, value))

    def state_dict(self) -> dict:
        """What all processes share (the main process saves it)."""
        return {
            "iteration": self.iteration,
            "episode": self.episode,
            "kl_coef": self.kl_coef,
            "skipped_updates": self.skipped_updates,
            # DeepSpeed's optimizer state is sharded: each process saves its own part
            "optimizer": None if self.zero_stage else self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "num_processes": self.accelerator.num_processes,
            "zero_stage": self.zero_stage,
            "wandb_id": self.tracker.wandb_id if self.tracker is not None else None,
            "config": dataclasses.asdict(self.cfg),
        }

    def process_state(self) -> dict:
        """What differs between processes: their prompts and random streams."""
        return {
            "optimizer": self.optimizer.state_dict() if self.zero_stage else None,
            "sampler": self.sampler.state_dict(),
            "shuffle_gen": self.shuffle_gen.get_state(),
            "rng": checkpoint.rng_state(),
        }

    def load_state_dict(self, state: dict, path: Path) -> None:
        """Continue exactly where `state` (and the files beside it in `path`) left off."""
        if state["num_processes"] != self.accelerator.num_processes:
            raise ConfigError(
                f"resume=true is not allowed with {self.accelerator.num_processes} processes: {path.name} was "
                f"written by {state['num_processes']} (launch the same number)"
            )
        if state["zero_stage"] != self.zero_stage:
            raise ConfigError(
                f"resume=true is not allowed with {distributed.describe(self.zero_stage)}: {path.name} was written "
                f"under {distributed.describe(state['zero_stage'])} (its optimizer state loads under the same one)"
            )
        params = [p for p in self.model.parameters() if p.requires_grad]
        with distributed.gathered(self.accelerator, params, modifier_rank=0):
            set_peft_model_state_dict(self.models.policy, checkpoint.load_adapter_weights(path))
            missing = self.models.value.load_state_dict(checkpoint.load_value_weights(path), strict=False)
        assert not missing.unexpected_keys, missing.unexpected_keys
        self.iteration, self.episode = state["iteration"], state["episode"]
        self.kl_coef, self.skipped_updates = state["kl_coef"], state["skipped_updates"]
        mine = checkpoint.load_state(path, checkpoint.process_file(self.accelerator.process_index))
        if self.zero_stage:  # DeepSpeed reads each process's part from a list indexed by rank
            parts = [None] * self.accelerator.num_processes
            parts[self.accelerator.process_index] = mine["optimizer"]
            self.optimizer.load_state_dict(parts)
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(mine["sampler"])
        self.shuffle_gen.set_state(mine["shuffle_gen"])
        checkpoint.set_rng_state(mine["rng"])

    def checkpoint(self) -> Optional[Path]:
        """Save a checkpoint (every process its own part); a state with NaN/Inf weights is never saved."""
        acc = self.accelerator
        lora, weights = self.trained_weights()
        if not (checkpoint.all_finite(weights) and checkpoint.all_finite(lora)):  # same on every process
            return checkpoint.latest(self.run_dir)
        tmp = checkpoint.begin(self.run_dir, self.iteration, create=acc.is_main_process)
        acc.wait_for_everyone()
        checkpoint.save_state(self.process_state(), tmp / checkpoint.process_file(acc.process_index))
        acc.wait_for_everyone()
        path = None
        if acc.is_main_process:
            path = checkpoint.commit(tmp, self.save_adapter(lora), weights, self.state_dict(), self.cfg.checkpoint.keep)
        acc.wait_for_everyone()
        return path or checkpoint.latest(self.run_dir)

    def save_adapter(self, lora: dict[str, torch.Tensor]):
        """A function saving the adapter (peft format, with its config) from the gathered `lora` tensors."""
        return lambda directory: self.models.policy.save_pretrained(directory, state_dict=lora)

    def save(self) -> None:
        """The adapter (peft format) and the value model's trainable weights (safetensors)."""
        self.accelerator.wait_for_everyone()
        lora, weights = self.trained_weights()
        if self.accelerator.is_main_process:
            self.save_adapter(lora)(self.run_dir / "adapter")
            save_file(weights, str(self.run_dir / "value_model.safetensors"))
