"""Tiny Qwen3-architecture models with random weights and locally trained tokenizers.

They stand in for hub models wherever the hub is out of reach (tests, `make demo`), and are
saved with `save_pretrained` so they load through exactly the `from_pretrained` path that serves
hub names. Building is deterministic and takes seconds; results are cached on disk.

Kinds:
  policy     causal LM, tokenizer A (ChatML template, two stop tokens like Qwen3)
  reward     sequence classifier (1 label), tokenizer B: a *different* vocabulary and chat template
  classifier sequence classifier (1 label) sharing the policy's tokenizer A
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3ForSequenceClassification,
)

from mindprint.console import hide_progress_bars
from mindprint.synthetic.tokenizers import policy_tokenizer, reward_tokenizer

BUILD_VERSION = "v1"  # bump when anything below changes what gets built
KINDS = ("policy", "reward", "classifier")


def tiny_root() -> Path:
    root = os.environ.get("MINDPRINT_TINY_DIR") or Path.home() / ".cache" / "mindprint" / "tiny"
    return Path(root) / BUILD_VERSION


def ensure_tiny(kind: str) -> str:
    """Path of the tiny model `kind`, building it first if it is not on disk."""
    if kind not in KINDS:
        raise ValueError(f"tiny model kind {kind!r} is unknown: expected one of {', '.join(KINDS)}")
    target = tiny_root() / kind
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        hide_progress_bars()  # save_pretrained's bars, on first use only, would be the only foreign lines of a demo
        # Build aside and rename, so parallel sweep jobs never load a half-written model.
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{kind}-"))
        _BUILDERS[kind](tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def tiny_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> Qwen3Config:
    cfg = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        # 0.3 rather than Qwen's 0.02: logits with a realistic spread (std ≈ 2.4 instead of ≈ 0.16),
        # so a LoRA on this 64-wide model has room to move the output distribution.
        initializer_range=0.3,
    )
    cfg.update(overrides)
    return Qwen3Config(**cfg)


def _build_policy(path: Path) -> None:
    tok = policy_tokenizer()
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(tiny_config(tok))
    stops = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)


def _build_classifier(path: Path, tok: PreTrainedTokenizerFast, seed: int) -> None:
    torch.manual_seed(seed)
    model = Qwen3ForSequenceClassification(tiny_config(tok, num_labels=1, tie_word_embeddings=False))
    model.save_pretrained(path)
    tok.save_pretrained(path)


_BUILDERS = {
    "policy": _build_policy,
    "reward": lambda p: _build_classifier(p, reward_tokenizer(), seed=1),
    "classifier": lambda p: _build_classifier(p, policy_tokenizer(), seed=2),
}
