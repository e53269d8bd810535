"""Tokenizers built locally, for models that stand in for the hub's: byte-level BPE, so any text encodes and every
id decodes. Trained on the shipped corpus (`train_tokenizer`: the tiny models'), or laid out without training at a
given vocabulary size (`synthetic_tokenizer`: the full-shape random models')."""

from __future__ import annotations

from itertools import product
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mindprint.assets import path as asset_path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # Qwen3's pad, turn start, eos
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Tokenizer B's template differs in markup as well as in vocabulary, like a foreign reward model's.
BRACKETS = "<s>{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n{% endfor %}</s>"


def _corpus() -> list[str]:
    text = Path(asset_path("corpus.txt")).read_text().splitlines()
    prompts = Path(asset_path("demo_prompts.jsonl")).read_text().splitlines()
    return text + prompts


def bpe_tokenizer(texts, vocab_size: int, specials: list[str], template: str, eos: str, pad: str
                  ) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (any text encodes; no unknown tokens), with a chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad)
    fast.chat_template = template
    return fast


def train_tokenizer(vocab_size: int, specials: list[str], template: str, eos: str, pad: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the shipped corpus (the tiny models')."""
    return bpe_tokenizer(_corpus(), vocab_size, specials, template, eos, pad)


def policy_tokenizer() -> PreTrainedTokenizerFast:
    # Qwen3's layout: eos <|im_end|>, pad <|endoftext|>, both of them stop generation.
    return train_tokenizer(512, SPECIALS, CHATML, "<|im_end|>", "<|endoftext|>")


def reward_tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(384, ["<pad>", "<s>", "</s>"], BRACKETS, "</s>", "<pad>")


def synthetic_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE of exactly `vocab_size` tokens, built without training.

    Tokens are the 256 byte symbols, then every pair of them, then pairs extended by one byte, in a
    fixed order; each token's merge joins its first part and its last byte. English encodes at about
    two bytes a token, and every id decodes to bytes, as with a trained vocabulary of that size.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    n = vocab_size - len(SPECIALS)
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges = []
    for a, b in product(alphabet + [x + y for x, y in product(alphabet, alphabet)], alphabet):
        if len(vocab) == n:
            break
        if a in vocab and a + b not in vocab:
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast
