"""Full-size architectures built locally (no hub): exact parameter counts and GPU benchmarks.

`build_random` saves a model of a given shape with random weights, plus a byte-level BPE tokenizer of
the model's full vocabulary size, so that `from_pretrained` loads it exactly as it would a hub model
(quantization included) and a sampled token id always decodes to text.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationConfig, Qwen3Config

from mindprint.synthetic.tokenizers import synthetic_tokenizer

QWEN3_0_6B = dict(
    hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
    intermediate_size=3072, vocab_size=151936, tie_word_embeddings=True,
)
QWEN3_8B = dict(
    hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    intermediate_size=12288, vocab_size=151936, tie_word_embeddings=False,
)
# The benchmark's code path at a size a CPU runs in seconds (tests, trying it out).
SMALL = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    intermediate_size=128, vocab_size=2048, tie_word_embeddings=True,
)


def qwen3_config(shape: dict, **overrides) -> Qwen3Config:
    return Qwen3Config(**{**shape, "max_position_embeddings": 40960, **overrides})


def build_random(path: Path, shape: dict, kind: str, device: str, seed: int = 0) -> None:
    """A `kind` ("causal" or "classifier") model of `shape`, random weights in bf16, saved to `path` with its tokenizer."""
    tok = synthetic_tokenizer(shape["vocab_size"])
    torch.manual_seed(seed)
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    if kind == "causal":
        config = qwen3_config(shape, **ids)
        auto = AutoModelForCausalLM
    else:
        config = qwen3_config(shape, num_labels=1, **ids)
        auto = AutoModelForSequenceClassification
    # Built on the target device in bf16: an 8B model initialises in seconds on a GPU, minutes on a CPU.
    with torch.device(device):
        model = auto.from_config(config, dtype=torch.bfloat16)
    if kind == "causal":
        stops = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
        model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    del model
    if torch.cuda.is_available():  # the benchmark's runs, in other processes, need this memory
        torch.cuda.empty_cache()
