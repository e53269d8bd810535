"""Samples from a causal LM for the voice pipeline's pairs and evaluation, and the KL between two models on them.

Prompts are raw text (the SFT stage's framing), batches left-padded, one sample per prompt at the run's sampling
settings, the generator seeded once: the same seed and batch size give the same samples.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mindprint.engine.models import own_generation_config, sampling_config, stop_token_ids


def _encode(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], device: torch.device) -> dict:
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        return tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    finally:
        tokenizer.padding_side = side


@torch.no_grad()
def sample(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
           max_new_tokens: Sequence[int] | int, temperature: float, batch_size: int, seed: int) -> list[list[int]]:
    """One response per prompt, as token ids cut after the first stop token (kept) and at the prompt's own
    `max_new_tokens` (one number for all, or one per prompt). A batch samples up to its longest budget."""
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    own_generation_config(model, tokenizer)
    stops = set(stop_token_ids(model, tokenizer))
    device = next(model.parameters()).device
    model.eval()
    torch.manual_seed(seed)
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        enc = _encode(tokenizer, prompts[start:start + batch_size], device)
        budget = budgets[start:start + batch_size]
        config = sampling_config(max(budget), temperature, sorted(stops), tokenizer.pad_token_id)
        rows = model.generate(**enc, generation_config=config)[:, enc["input_ids"].shape[1]:].tolist()
        for row, limit in zip(rows, budget):
            row = row[:limit]
            end = next((i for i, t in enumerate(row) if t in stops), None)
            out.append(row if end is None else row[:end + 1])
    return out


def decode(tokenizer: PreTrainedTokenizerBase, responses: Sequence[list[int]]) -> list[str]:
    return tokenizer.batch_decode(responses, skip_special_tokens=True)


@torch.no_grad()
def sequence_kl(model: PreTrainedModel, reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                prompts: Sequence[str], responses: Sequence[list[int]], temperature: float, batch_size: int
                ) -> list[float]:
    """Per response y sampled from `model`: Σ_t KL(π(·|x, y<t) ‖ π_ref(·|x, y<t)), the exact KL of each next-token
    distribution (both at the sampling temperature; 0 reads as 1) summed over the response, in nats: the quantity
    PPO's eval/kl reports."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        enc = _encode(tokenizer, prompts[start:start + batch_size], device)
        rows = responses[start:start + batch_size]
        width = max(len(r) for r in rows) or 1
        resp = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros(len(rows), width, device=device)
        for i, r in enumerate(rows):
            resp[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        ids = torch.cat([enc["input_ids"], resp], 1)
        attention = torch.cat([enc["attention_mask"], mask.long()], 1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)  # left padding: positions as generate() gave them
        n, temp = enc["input_ids"].shape[1], temperature or 1.0
        logp = [torch.log_softmax(m(input_ids=ids, attention_mask=attention, position_ids=positions)
                                  .logits[:, n - 1:-1].float() / temp, -1) for m in (model, reference)]
        vocab = min(lp.shape[-1] for lp in logp)  # a vocabulary padded past the tokenizer's adds nothing
        kl = (logp[0].exp()[..., :vocab] * (logp[0][..., :vocab] - logp[1][..., :vocab])).sum(-1)
        out += (kl * mask).sum(1).tolist()
    return out
