"""Prompts from a hub dataset or a local file, split into train and held-out sets, grouped by topic."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from mindprint.config import ConfigError, DataConfig

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
# Code, or pickles (which run code when loaded): never read as data, whether the file exists here or not.
CODE_SUFFIXES = (".py", ".pyc", ".pkl", ".pickle", ".pt", ".pth")
# datasets' pickle builder: named alone, it reads every file of the working directory (datasets 5.2 refuses to
# unpickle them; older versions do not).
PICKLE_BUILDERS = ("pandas",)


@dataclass(frozen=True)
class Prompt:
    text: str  # as the user wrote it; what the reward model sees as the user turn
    query: str  # what the policy is conditioned on (the chat-formatted text when data.apply_chat_template)
    topic: Optional[str]


@dataclass
class PromptSet:
    train: list[Prompt]
    eval: list[Prompt]
    skipped: int  # empty or longer than data.max_prompt_length


def load_table(key: str, name: str, split: str) -> datasets.Dataset:
    """A split of a hub dataset, or a whole local .jsonl/.json/.csv/.parquet/.txt file (a .txt's lines: `text`).

    Anything unreadable becomes a one-line ConfigError naming `key`. Nothing is read as code: a name ending
    in .py or .pkl (say) is refused, and so is datasets' pickle-reading `pandas` builder; datasets 5.2 runs no
    dataset scripts (a hub name ending in .py included).
    """
    path = os.path.expanduser(name)
    suffix = os.path.splitext(path)[1].lower()
    if suffix in CODE_SUFFIXES or name.strip().lower() in PICKLE_BUILDERS:
        what = f"a {suffix} file is code or a pickle" if suffix in CODE_SUFFIXES else \
            f"datasets' {name} builder reads pickles"
        raise ConfigError(f"{key}={name!r} is not allowed: {what}, which can run code when loaded "
                          f"(expected data: a file ending in {', '.join(LOCAL_BUILDERS)}, or a hub dataset)")
    try:
        if suffix in LOCAL_BUILDERS or os.path.exists(path):
            if not os.path.isfile(path):
                raise ConfigError(f"{key}={name!r} is not allowed: no such file")
            if suffix not in LOCAL_BUILDERS:
                raise ConfigError(f"{key}={name!r} is not allowed: expected a file ending in {', '.join(LOCAL_BUILDERS)}")
            if os.path.getsize(path) == 0:
                raise ConfigError(f"{key}={name!r} is not allowed: the file is empty")
            if suffix != ".parquet":
                check_utf8(key, name, path)
            table = datasets.load_dataset(LOCAL_BUILDERS[suffix], data_files=path, split="train")
            if len(table) == 0:
                raise ConfigError(f"{key}={name!r} is not allowed: the file holds no rows")
            return table
        return datasets.load_dataset(name, split=split)
    except ConfigError:
        raise
    except Exception as err:  # datasets raises many types for unreadable input
        if "corresponds to no data" in str(err):  # datasets' words for a file that parsed to no rows
            raise ConfigError(f"{key}={name!r} is not allowed: the file holds no rows") from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key}={name!r} could not be loaded: {reason}") from None


def check_utf8(key: str, name: str, path: str) -> None:
    """A text file (JSON lines, JSON, CSV, plain text) must be UTF-8: a ConfigError naming the first bad byte, its line
    and column otherwise (a Latin-1 export, say), before datasets' reader reaches it."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start]
        line = before.count(b"\n") + 1
        column = len(before.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace")) + 1
        raise ConfigError(f"{key}={name!r} is not allowed: it is not UTF-8 text (byte 0x{data[err.start]:02x} at line "
                          f"{line}, column {column}); save it as UTF-8") from None


def _load_split(cfg: DataConfig, split: str, key: str = "name") -> datasets.Dataset:
    """data.name's split, or (key="eval_name") data.eval_name's."""
    name = getattr(cfg, key)
    ds = load_table(f"data.{key}", name, split)
    return ds.rename_column("text", cfg.prompt_field) if "text" in ds.column_names and name.endswith(".txt") else ds


def _to_prompts(ds: datasets.Dataset, cfg: DataConfig, tokenizer: PreTrainedTokenizerBase,
                source: Optional[str] = None) -> tuple[list[Prompt], int]:
    """(prompts, how many were skipped) of `ds`, read from `source` (default data.name)."""
    source = source or cfg.name
    for key, column in (("data.prompt_field", cfg.prompt_field), ("data.topic_field", cfg.topic_field)):
        if column is not None and column not in ds.column_names:
            raise ConfigError(
                f"{key}={column!r} is not allowed: not a column of {source} (columns: {', '.join(ds.column_names)})"
            )
    prompts, skipped, not_text = [], 0, []
    for row in ds:
        text = row[cfg.prompt_field]
        if text is not None and not isinstance(text, str):
            not_text.append(text)
        if not isinstance(text, str) or not text.strip():
            skipped += 1
            continue
        query = text
        if cfg.apply_chat_template:
            query = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        if len(tokenizer(query, add_special_tokens=False)["input_ids"]) > cfg.max_prompt_length:
            skipped += 1
            continue
        topic = str(row[cfg.topic_field]) if cfg.topic_field else None
        prompts.append(Prompt(text=text, query=query, topic=topic))
    if not prompts and not_text:
        raise ConfigError(f"data.prompt_field={cfg.prompt_field!r} is not allowed: its values in {source} are not text "
                          f"({type(not_text[0]).__name__}, e.g. {not_text[0]!r}; {len(not_text)} of {len(ds)} rows)")
    return prompts, skipped


def load_prompts(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> PromptSet:
    prompts, skipped = _to_prompts(_load_split(cfg, cfg.split), cfg, tokenizer)
    if cfg.eval_name is not None or cfg.eval_split is not None:
        key = "name" if cfg.eval_name is None else "eval_name"
        held_out, skipped_eval = _to_prompts(_load_split(cfg, cfg.eval_split or "train", key), cfg, tokenizer,
                                             getattr(cfg, key))
        skipped += skipped_eval
        held_out = held_out[: cfg.eval_size]
    else:
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed)).tolist()
        held = set(order[: min(cfg.eval_size, max(len(prompts) - 1, 0))])
        held_out = [p for i, p in enumerate(prompts) if i in held]
        prompts = [p for i, p in enumerate(prompts) if i not in held]
    if not prompts:
        raise ConfigError(
            f"data.name={cfg.name!r} is not allowed: no usable prompt left ({skipped} empty or longer than "
            f"data.max_prompt_length={cfg.max_prompt_length} tokens)"
        )
    return PromptSet(train=prompts, eval=held_out, skipped=skipped)


class PromptSampler:
    """Yields training batches; with topics, `steps_per_topic` iterations on one topic, then the next.

    Within a topic (or the whole set) prompts are drawn without replacement from a seeded
    permutation, reshuffled at every pass. All state is in `state_dict()` so a run can resume.
    """

    def __init__(self, prompts: list[Prompt], steps_per_topic: int, shuffle: bool, seed: int):
        self.groups: dict[Optional[str], list[Prompt]] = {}
        for p in prompts:
            self.groups.setdefault(p.topic, []).append(p)
        self.topics = list(self.groups)
        self.steps_per_topic = steps_per_topic
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.order: dict[Optional[str], list[int]] = {t: [] for t in self.topics}

    def topic_at(self, iteration: int) -> Optional[str]:
        if len(self.topics) == 1:
            return self.topics[0]
        return self.topics[(iteration // self.steps_per_topic) % len(self.topics)]

    def batch(self, iteration: int, size: int) -> list[Prompt]:
        topic = self.topic_at(iteration)
        pool, order = self.groups[topic], self.order[topic]
        out = []
        while len(out) < size:
            if not order:
                n = len(pool)
                order.extend(torch.randperm(n, generator=self.generator).tolist() if self.shuffle else range(n))
            out.append(pool[order.pop(0)])
        return out

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": {str(k): v for k, v in self.order.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = {t: list(state["order"][str(t)]) for t in self.topics}
