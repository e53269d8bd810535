"""Full-size architectures built locally (no hub), for exact parameter counts and GPU benchmarks."""

from __future__ import annotations

from transformers import Qwen3Config

QWEN3_0_6B = dict(
    hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
    intermediate_size=3072, vocab_size=151936, tie_word_embeddings=True,
)
QWEN3_8B = dict(
    hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    intermediate_size=12288, vocab_size=151936, tie_word_embeddings=False,
)


def qwen3_config(shape: dict, **overrides) -> Qwen3Config:
    return Qwen3Config(**{**shape, "max_position_embeddings": 40960, **overrides})
