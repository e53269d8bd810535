"""The pairs stage: for each prompt, chosen = the author's completion, rejected = a model's sample for the same
prompt (the base model, or the SFT model), drawn at the run's sampling settings in batches. TRL's
prompt/chosen/rejected format, which `mindprint.train_reward` reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mindprint.engine.models import own_generation_config, sampling_config, stop_token_ids
from mindprint.voice.prepare import Example


@torch.no_grad()
def sample(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_new_tokens: int,
           temperature: float, batch_size: int, seed: int) -> list[str]:
    """One sample per prompt, cut at the first stop token, decoded without special tokens. Batches are left-padded;
    the generator is seeded once, so the same seed gives the same samples."""
    own_generation_config(model, tokenizer)
    config = sampling_config(max_new_tokens, temperature, stop_token_ids(model, tokenizer), tokenizer.pad_token_id)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            ids = model.generate(**enc, generation_config=config)[:, enc["input_ids"].shape[1]:]
            out += tokenizer.batch_decode(ids, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def make_pairs(examples: Sequence[Example], rejected: Sequence[str]) -> list[dict[str, str]]:
    if len(examples) != len(rejected):
        raise ValueError(f"{len(examples)} examples but {len(rejected)} samples")
    return [{"prompt": e.prompt, "chosen": e.completion, "rejected": r, "topic": e.topic, "document": e.document}
            for e, r in zip(examples, rejected)]


def write_pairs(pairs: list[dict[str, str]], path: Path) -> None:
    """JSON lines, written aside and renamed (whole or absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    tmp.replace(path)
