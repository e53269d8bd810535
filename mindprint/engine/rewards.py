"""Scorers: (prompts, responses) → one float per episode.

The reward model reads the conversation through *its own* tokenizer and chat template
(user = prompt, assistant = response), so it need not share the policy's vocabulary.
A rule scorer is any Python callable `module:function` with the same signature.
"""

from __future__ import annotations

import importlib
import numbers
import os
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from mindprint.analysis.style import StyleTarget
from mindprint.config import ConfigError, EvalConfig, RewardConfig
from mindprint.engine.models import load_tokenizer


class Scorer(Protocol):
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor: ...


class RewardModelScorer:
    """Scores with a sequence classifier; batches are sorted by length so little compute goes to padding."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int, max_length: int):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.device = next(model.parameters()).device

    def conversation(self, prompt: str, response: str) -> str:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        texts = [self.conversation(p, r) for p, r in zip(prompts, responses)]
        # The template already holds every special token the model expects.
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores = torch.empty(len(encoded))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(self.device)
            logits = self.model(**batch).logits
            scores[idx] = logits[:, 0].float().cpu()
        return scores


class RuleScorer:
    """Wraps a plain function `f(prompts, responses) -> list[float]`, one real number per response.

    What it returns is checked, since a wrong length would otherwise broadcast silently: a mistake in the rule
    is a one-line ConfigError naming it. NaN is a number: that update is skipped, as for a reward model's NaN.
    """

    def __init__(self, spec: str, fn: Callable[[Sequence[str], Sequence[str]], Sequence[float]],
                 key: str = "reward.rule"):
        self.spec, self.fn, self.key = spec, fn, key

    def refuse(self, why: str) -> ConfigError:
        return ConfigError(f"{self.key}={self.spec!r} is not allowed: {why}")

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        try:
            scores = self.fn(prompts, responses)
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise self.refuse(f"it raised {type(err).__name__}" + (f": {reason}" if reason else "")) from None
        if hasattr(scores, "tolist"):  # a numpy array or a tensor
            scores = scores.tolist()
        if not isinstance(scores, (list, tuple)):
            raise self.refuse(f"it returned a {type(scores).__name__}, expected a list of {len(responses)} numbers")
        if len(scores) != len(responses):
            raise self.refuse(f"it returned {len(scores)} scores for {len(responses)} responses (expected one each)")
        for score in scores:
            if isinstance(score, bool) or not isinstance(score, numbers.Real):
                raise self.refuse(f"it returned {score!r} ({type(score).__name__}), expected a real number per "
                                  "response")
        return torch.tensor([float(s) for s in scores], dtype=torch.float32)


def load_rule(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"reward.rule={spec!r} is not allowed: expected an importable 'module:function'") from None
    if not callable(fn):
        raise ConfigError(f"reward.rule={spec!r} is not allowed: it is not callable")
    return fn


def build_scorer(cfg: RewardConfig, model, tokenizer) -> Scorer:
    if cfg.rule is not None:
        return RuleScorer(cfg.rule, load_rule(cfg.rule))
    return RewardModelScorer(model, tokenizer, cfg.batch_size, cfg.max_length)


def build_judges(cfg: EvalConfig, device: torch.device) -> dict[str, Scorer]:
    """eval.scorers as scorers: a rule ("module:function"), or a sequence classifier's hub name or directory."""
    judges: dict[str, Scorer] = {}
    for name, spec in cfg.scorers.items():
        key = f"eval.scorers.{name}"
        if ":" in spec and not os.path.exists(os.path.expanduser(spec)):
            try:
                judges[name] = RuleScorer(spec, load_rule(spec), key)
            except ConfigError as err:
                raise ConfigError(str(err).replace("reward.rule", key)) from None
            continue
        tokenizer = load_tokenizer(key, spec, padding_side="right")
        model = AutoModelForSequenceClassification.from_pretrained(os.path.expanduser(spec), num_labels=1).to(device)
        model.config.pad_token_id = tokenizer.pad_token_id
        judges[name] = RewardModelScorer(model.eval(), tokenizer, batch_size=16, max_length=2048)
    return judges


def load_style(path: str) -> StyleTarget:
    """eval.style: the author's style target, or a one-line ConfigError."""
    try:
        return StyleTarget.load(Path(path).expanduser())
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"eval.style={path!r} could not be loaded (expected the data/style.json that "
                          f"python -m mindprint.voice writes): {type(err).__name__}: {err}") from None
