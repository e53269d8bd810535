"""Rollout: prompts → generated responses → old and reference log-probs, values (with a critic) → scores.

`Actor` holds the no-grad side of an iteration: what the policy samples, what every model says about
it, and what the reward model (or rule) scores. Its output is a `Rollout`, one field per tensor.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import GenerationConfig

from mindprint.algorithms import ppo
from mindprint.config import RunConfig
from mindprint.engine import distributed
from mindprint.engine.data import Prompt
from mindprint.engine.models import Models, sampling_config
from mindprint.engine.rewards import Scorer


@dataclass
class Episodes:
    """B episodes as token ids: what every forward over them (log-probs, values, KL) reads. `episodes[idx]` is the
    episodes of the rows `idx` (a slice or an index tensor)."""

    queries: torch.Tensor  # B × Lq prompt ids, left-padded
    query_mask: torch.Tensor  # B × Lq
    responses: torch.Tensor  # B × T response ids, pad after the first stop token
    mask: torch.Tensor  # B × T float: 1 on real response tokens (the stop token included)

    def __getitem__(self, idx) -> Episodes:
        return Episodes(self.queries[idx], self.query_mask[idx], self.responses[idx], self.mask[idx])

    def __len__(self) -> int:
        return self.responses.shape[0]

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompt + response as one left-padded sequence (without the padding every row shares), its attention mask,
        and positions as generate() counts them."""
        queries, query_mask = drop_shared_padding(self.queries, self.query_mask)
        input_ids = torch.cat([queries, self.responses], dim=1)
        attention_mask = torch.cat([query_mask, self.mask.long()], dim=1)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return input_ids, attention_mask, position_ids


@dataclass
class Rollout(Episodes):
    """One iteration's B episodes on this process, with what the models said of them; with algo.group_size G,
    rows [g·G, (g+1)·G) share a prompt. Indexing gives the `Episodes` of some rows, what a forward needs."""

    prompts: list[Prompt]  # B
    texts: list[str]  # B decoded responses, cut at the first stop token
    logprobs: torch.Tensor  # B × T: log π_old(a_t), from logits/temperature as sampled
    ref_logprobs: torch.Tensor  # B × T: log π_ref(a_t)
    values: Optional[torch.Tensor]  # B × T: V(s_t); None without a critic
    scores: torch.Tensor  # B: the reward model's (or rule's) score, missing_eos_penalty applied


class Timer:
    """Seconds per phase, summed over the calls of one iteration."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def chunks(n: int, size: int) -> Iterator[slice]:
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


class Actor:
    """Samples responses and scores them; every forward here is no-grad and calls the models directly
    (no gradient sync), except generation under ZeRO-3, which gathers the sharded weights once per call."""

    def __init__(self, cfg: RunConfig, models: Models, scorer: Scorer, accelerator: Accelerator, engine,
                 policy, value):
        self.cfg, self.p = cfg, cfg.ppo
        self.models, self.scorer, self.accelerator = models, scorer, accelerator
        self.engine = engine  # what DDP or DeepSpeed wraps (for ZeRO-3's gather)
        self.policy, self.value = policy, value  # unwrapped; value is None without a critic
        self.device = accelerator.device

    def generation_config(self, temperature: float) -> GenerationConfig:
        """What generate() samples with: our settings and nothing else (`models.sampling_config`), so a
        repetition_penalty or top_k that a checkpoint ships cannot act."""
        # One cache length for every call (prompts are at most data.max_prompt_length tokens), so the compiled
        # decoding step is compiled once, not again for each batch's longest prompt.
        cache = {}
        if self.p.kv_cache == "static":
            cache = dict(cache_implementation="static",
                         max_cache_len=self.cfg.data.max_prompt_length + self.p.response_length)
        return sampling_config(self.p.response_length, temperature, self.models.stop_ids,
                               self.models.tokenizer.pad_token_id, **cache)

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], temperature: float) -> Episodes:
        tok = self.models.tokenizer
        enc = tok([p.query for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        queries, query_mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        generation_config = self.generation_config(temperature)
        # In chunks of rollout_batch_size, as TRL's local_rollout_forward_batch_size: the KV cache and the
        # prefill's activations scale with the chunk, so a smaller one trades speed for memory.
        out_chunks = []
        with distributed.for_generation(self.accelerator, self.engine):
            for rows in chunks(len(prompts), self.p.rollout_batch_size):
                ids, ids_mask = drop_shared_padding(queries[rows], query_mask[rows])
                out = self.policy.generate(input_ids=ids, attention_mask=ids_mask, generation_config=generation_config)
                out_chunks.append(out[:, ids.shape[1] :])
        # a chunk whose rows all stopped early comes back shorter: padding after the stop is masked anyway
        width = max(c.shape[1] for c in out_chunks)
        responses = torch.cat([F.pad(c, (0, width - c.shape[1]), value=tok.pad_token_id) for c in out_chunks])
        mask = ppo.response_mask(responses, self.models.stop_ids)
        responses = torch.where(mask.bool(), responses, tok.pad_token_id)
        return Episodes(queries, query_mask, responses, mask)

    def logits(self, model, rows: Episodes, temperature: float) -> torch.Tensor:
        input_ids, attention_mask, position_ids = rows.inputs()
        T = rows.responses.shape[1]
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=T + 1,
            use_cache=False,
        )
        return response_logits(out.logits, temperature)

    def logprobs(self, model, rows: Episodes, temperature: float) -> torch.Tensor:
        """log π(a_t|s_t) of each response token from logits/temperature, as sampling drew them."""
        return ppo.logprobs_from_logits(self.logits(model, rows, temperature), rows.responses)

    def exact_kl(self, rows: Episodes, temperature: float) -> torch.Tensor:
        logits = self.logits(self.policy, rows, temperature)
        with self.models.reference_mode() as ref:
            ref_logits = self.logits(ref, rows, temperature)
        return ppo.kl_exact(logits, ref_logits)

    def values(self, rows: Episodes) -> torch.Tensor:
        return response_values(self.value(*rows.inputs()), rows.responses.shape[1])

    @torch.no_grad()
    def batched(self, fn, episodes: Episodes) -> torch.Tensor:
        """`fn` over the episodes in chunks of ppo.rollout_batch_size (the memory of a no-grad forward), joined."""
        return torch.cat([fn(episodes[s]) for s in chunks(len(episodes), self.p.rollout_batch_size)])

    def decode(self, responses: torch.Tensor, mask: torch.Tensor) -> list[str]:
        tok = self.models.tokenizer
        return [tok.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(responses, mask)]

    def ended(self, responses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per episode: did the response stop on a stop token (rather than the length limit)?"""
        stops = torch.tensor(self.models.stop_ids, device=responses.device)
        return (torch.isin(responses, stops) & mask.bool()).any(1)

    def score(self, prompts: list[Prompt], texts: list[str], responses, mask) -> torch.Tensor:
        scores = self.scorer([p.text for p in prompts], texts).to(self.device)
        if self.p.missing_eos_penalty is not None:
            penalty = torch.full_like(scores, self.p.missing_eos_penalty)
            scores = torch.where(self.ended(responses, mask), scores, penalty)
        return scores

    def rollout(self, prompts: list[Prompt], timer: Timer) -> Rollout:
        """Generate, then the old and reference log-probs, the values (with a critic) and the scores."""
        self.engine.eval()
        with timer("generate"):
            e = self.generate(prompts, self.p.temperature)
        temp = self.p.temperature
        with timer("generate"):  # old log-probs belong to sampling: the same forward as training
            logprobs = self.batched(lambda rows: self.logprobs(self.policy, rows, temp), e)
        with timer("reference"), self.models.reference_mode() as ref:
            ref_logprobs = self.batched(lambda rows: self.logprobs(ref, rows, temp), e)
        values = None
        if self.value is not None:
            with timer("value"):
                values = self.batched(self.values, e)
        with timer("reward"):
            texts = self.decode(e.responses, e.mask)
            scores = self.score(prompts, texts, e.responses, e.mask)
        return Rollout(e.queries, e.query_mask, e.responses, e.mask, prompts=prompts, texts=texts, logprobs=logprobs,
                       ref_logprobs=ref_logprobs, values=values, scores=scores)
