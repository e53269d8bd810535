"""Update: ppo.ppo_epochs passes of minibatches over a rollout, one optimizer step per minibatch.

`Learner` owns what trains: the policy's LoRA and (with a critic) the value model as one module, under
one AdamW with a parameter group per model, wrapped by accelerate (DDP or DeepSpeed). Each minibatch's
loss is the clipped surrogate (plus GRPO's β·k3 with algo.kl_in=loss, plus vf_coef × the clipped value
loss with a critic), reduced by algo.loss_aggregation over the normalisers of the whole minibatch.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from accelerate import Accelerator
from torch.nn.utils import clip_grad_norm_
from transformers import get_scheduler

from mindprint.algorithms import estimators, ppo
from mindprint.config import ConfigError, RunConfig
from mindprint.engine import distributed
from mindprint.engine.models import Models, PolicyAndValue, TokenValueModel
from mindprint.engine.rollout import Episodes, Rollout, chunks, response_logits, response_values


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


class Learner:
    def __init__(self, cfg: RunConfig, models: Models, accelerator: Accelerator):
        self.cfg, self.p, self.algo = cfg, cfg.ppo, cfg.algo
        self.accelerator, self.device = accelerator, accelerator.device
        # Trainable tensors listed once: walking the module tree at every clip costs ~7% of an update on small models.
        self.policy_params = [p for p in models.policy.parameters() if p.requires_grad]
        self.value_params = [p for p in models.value.parameters() if p.requires_grad] if models.value else []
        # One AdamW, a parameter group per model (each its own learning rate): one optimizer step per
        # minibatch instead of two, and the single optimizer DeepSpeed accepts. fused: one kernel per group.
        groups = [{"params": self.policy_params, "lr": self.p.learning_rate}]
        if self.value_params:
            groups.append({"params": self.value_params, "lr": self.p.value_learning_rate})
        optimizer = torch.optim.AdamW(groups, weight_decay=self.p.weight_decay,  # torch's default (0.01) is hidden
                                      fused=True)
        # the schedule scales each group's own learning rate, once per iteration
        self.scheduler = get_scheduler(self.p.lr_scheduler, optimizer, num_warmup_steps=0,
                                       num_training_steps=self.p.steps)
        self.zero_stage = distributed.zero_stage(accelerator)
        value = TokenValueModel(models.value) if models.value is not None else None
        self.model, self.optimizer = accelerator.prepare(PolicyAndValue(models.policy, value), optimizer)
        joint = accelerator.unwrap_model(self.model)
        self.policy, self.value = joint.policy, joint.value
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer (unless DeepSpeed shards it: then each process saves its part) and the schedule."""
        return {"optimizer": None if self.zero_stage else self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "zero_stage": self.zero_stage}

    def process_state_dict(self) -> dict[str, Any]:
        """This process's optimizer shard under DeepSpeed, and its minibatch shuffle."""
        return {"optimizer": self.optimizer.state_dict() if self.zero_stage else None,
                "shuffle_gen": self.shuffle_gen.get_state()}

    def load_state_dict(self, shared: dict[str, Any], mine: dict[str, Any], name: str) -> None:
        """Restore what `state_dict` (shared) and `process_state_dict` (mine) saved in the checkpoint `name`."""
        if shared["zero_stage"] != self.zero_stage:
            raise ConfigError(
                f"resume=true is not allowed with {distributed.describe(self.zero_stage)}: {name} was written "
                f"under {distributed.describe(shared['zero_stage'])} (its optimizer state loads under the same one)"
            )
        if self.zero_stage:  # DeepSpeed reads each process's part from a list indexed by rank
            parts = [None] * self.accelerator.num_processes
            parts[self.accelerator.process_index] = mine["optimizer"]
            self.optimizer.load_state_dict(parts)
        else:
            self.optimizer.load_state_dict(shared["optimizer"])
        self.scheduler.load_state_dict(shared["scheduler"])
        self.shuffle_gen.set_state(mine["shuffle_gen"])

    def train_forward(self, rows: Episodes) -> tuple:
        """Log-probs, entropy (no graph: only reported) and values (None without a critic) of a micro-batch, both
        models in one call through the wrapper that syncs their gradients."""
        input_ids, attention_mask, position_ids = rows.inputs()
        T = rows.responses.shape[1]
        logits, values = self.model(input_ids, attention_mask, position_ids, T + 1)
        logits = response_logits(logits, self.p.temperature)
        logp = ppo.logprobs_from_logits(logits, rows.responses)
        with torch.no_grad():
            entropy = ppo.entropy_from_logits(logits)
        return logp, entropy, None if values is None else response_values(values, T)

    def clip_gradients(self) -> dict[str, torch.Tensor]:
        """Each model's gradient clipped to ppo.max_grad_norm on its own; returns the norms before clipping.

        torch's clip directly: accelerate's wrapper probes installed packages on every call (~0.2 ms,
        7% of a small model's update); under fp16 mixed precision the gradients are unscaled first.
        """
        self.accelerator.unscale_gradients()
        norms = {"policy/grad_norm": clip_grad_norm_(self.policy_params, self.p.max_grad_norm, foreach=True)}
        if self.value_params:
            norms["val/grad_norm"] = clip_grad_norm_(self.value_params, self.p.max_grad_norm, foreach=True)
        return norms

    def step_optimizer(self) -> None:
        """torch's step directly where accelerate's would only call it: its wrapper probes installed packages
        twice per call (~0.5 ms, 2% of a small model's update). With a gradient scaler (fp16), accelerate's."""
        if self.optimizer.scaler is None:
            self.optimizer.optimizer.step()
        else:
            self.optimizer.step()

    def minibatch_gradients(self, r: Rollout, idx: torch.Tensor, adv: torch.Tensor, returns, counts: torch.Tensor,
                            kl_coef: float, stats: TokenStats, first: bool) -> bool:
        """Accumulate the gradient of the minibatch `idx` in micro-batches; False if a loss was NaN/Inf on any
        process (that micro-batch is never backpropagated).

        `counts` holds the real tokens and the sequences of the whole minibatch on all processes: each
        micro-batch's loss is its share of `estimators.aggregate` over those normalisers, times the process
        count, which the all-reduce of DDP (or DeepSpeed) averages away. So the accumulated gradient is the
        minibatch's, whatever the micro-batch size or the number of processes, and `loss/*` logs exactly
        what was differentiated.
        """
        scale = self.accelerator.num_processes
        reduce = partial(estimators.aggregate, mode=self.algo.loss_aggregation, n_tokens=counts[0],
                         n_seqs=counts[1], max_len=self.p.response_length)
        pg_total = vf_total = torch.zeros((), device=self.device)
        for micro in chunks(len(idx), self.p.micro_batch_size):
            i = idx[micro]
            rows = r[i]
            mask = rows.mask
            logp, entropy, new_values = self.train_forward(rows)
            penalty = None
            if self.algo.kl_in == "loss":
                penalty = estimators.grpo_kl_penalty(logp, r.ref_logprobs[i], kl_coef, mask)
                stats.add("policy/kl_penalty_avg", ppo.masked_mean(penalty.detach(), mask), mask.sum())
            pg_loss, pg = ppo.policy_loss(logp, r.logprobs[i], adv[i], mask, self.p.cliprange,
                                          reduce=partial(reduce, mask=mask), penalty=penalty)
            loss = pg_loss
            if new_values is not None:
                vf_loss, vf = ppo.value_loss(new_values, r.values[i], returns[i], mask, self.p.cliprange_value,
                                             reduce=partial(reduce, mask=mask))
                loss = loss + self.p.vf_coef * vf_loss
            if not distributed.everywhere(self.accelerator, bool(torch.isfinite(loss))):
                return False
            self.accelerator.backward(loss * scale)
            pg_total = pg_total + pg_loss.detach() * scale
            tokens = mask.sum()
            stats.add("policy/approxkl_avg", pg["approxkl"], tokens)
            stats.add("policy/clipfrac_avg", pg["clipfrac"], tokens)
            stats.add("policy/entropy_avg", ppo.masked_mean(entropy, mask), tokens)
            stats.add("val/ratio", pg["ratio"], tokens)
            if first:
                stats.add("val/ratio_first_minibatch", pg["ratio"], tokens)
            if new_values is not None:
                vf_total = vf_total + vf_loss.detach() * scale
                stats.add("val/clipfrac_avg", vf["clipfrac"], tokens)
        one = torch.ones((), device=self.device)
        stats.add("loss/policy_avg", pg_total, one)  # averaged over processes and minibatches
        if self.value is not None:
            stats.add("loss/value_avg", vf_total, one)
        return True

    def update(self, r: Rollout, adv: torch.Tensor, returns, kl_coef: float) -> tuple[dict[str, float], bool]:
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
            minibatches = [order[mb] for mb in chunks(B, self.p.mini_batch_size)]
            # each minibatch's real tokens and sequences over all processes, in one collective per epoch
            local = torch.stack([torch.stack([r.mask[i].sum(), torch.tensor(float(len(i)), device=self.device)])
                                 for i in minibatches])
            counts = distributed.sum_all(self.accelerator, local)
            for mb_index, idx in enumerate(minibatches):
                self.optimizer.zero_grad(set_to_none=True)
                first = epoch == 0 and mb_index == 0
                if not self.minibatch_gradients(r, idx, adv, returns, counts[mb_index], kl_coef, stats, first):
                    skipped = True
                elif self.zero_stage:  # DeepSpeed has clipped and stepped inside backward
                    norm = torch.as_tensor(float(self.model.get_global_grad_norm()), device=self.device)
                    skipped |= not bool(torch.isfinite(norm))  # DeepSpeed skipped that step itself
                    stats.add("grad_norm", norm, one)
                else:
                    norms = self.clip_gradients()
                    if distributed.everywhere(self.accelerator, all(bool(torch.isfinite(n)) for n in norms.values())):
                        self.step_optimizer()
                        for name, norm in norms.items():
                            stats.add(name, norm, one)
                    else:
                        skipped = True
                        if self.optimizer.scaler is not None:  # fp16: the scaler skips this step, lowers its scale
                            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return stats.averages(self.accelerator), skipped
