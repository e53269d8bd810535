"""A rule scorer for the demo and the tests (`reward=vowels`): learnable by a tiny random policy in a few dozen
iterations, so progress shows without any reward model."""

from __future__ import annotations

from typing import Sequence

VOWELS = frozenset("aeiouAEIOU")


def vowel_share(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Demo rule: share of a response's letters that are vowels (0 for a response without letters).

    A random tiny policy emits a mix of byte-level tokens; raising this share means learning to
    prefer a subset of its vocabulary, which PPO on a small LoRA does in a few dozen iterations.
    """
    out = []
    for r in responses:
        letters = [c for c in r if c.isalpha()]
        out.append(sum(c in VOWELS for c in letters) / len(letters) if letters else 0.0)
    return out
