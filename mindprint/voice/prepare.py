"""From a folder of writing to training data: documents, passages, prompt/completion pairs, whole documents held out.

    texts/                      a folder read recursively: .txt and .md files, and .jsonl/.csv tables with a text
      essays/  a.md b.txt       column (and an optional topic column). A file's topic is its first-level sub-folder
      letters/ c.txt            (or the table's topic column); files at the top form one topic, the folder's name.
      d.txt

Each document is split into passages on paragraph boundaries (blank lines): paragraphs are joined until the passage
has `min_tokens` (never past `max_tokens`), a paragraph longer than `max_tokens` is cut at sentence ends, and a passage
still shorter than `min_tokens` (a document's short tail) is dropped and counted. Closing a passage as soon as it is
long enough gives a small folder of writing as many examples as it holds, each long enough to carry a style. A passage becomes a prompt (an instruction naming the topic, then the
passage's opening: its first sentences up to `opening_tokens`) and a completion (the rest). The opening carries what
the passage is about, so what the completion teaches is how the author goes on: the voice, not the subject.

Whole documents are held out (a seeded `heldout_fraction` of them, at least one): no passage of a held-out document
reaches SFT, preference pairs, reward training or PPO prompts.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mindprint.config import ConfigError

TEXT_SUFFIXES = (".txt", ".md")
TABLE_SUFFIXES = (".jsonl", ".csv")
PARAGRAPH = re.compile(r"\n\s*\n")
SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]’”]*\s+")


class PrepareError(ConfigError):
    """Writing that cannot become training data (an empty folder, too few documents, ...): one line, exit 2."""


@dataclass(frozen=True)
class Document:
    name: str  # path relative to the folder (with the row number for a table's rows)
    topic: str
    text: str


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    topic: str
    document: str


@dataclass
class Prepared:
    train: list[Example]
    heldout: list[Example]
    documents: dict[str, list[str]]  # "train" / "heldout" → document names (those without a passage too)
    skipped_files: list[str]  # not UTF-8 (or binary): named in one warning line
    short_passages: int  # dropped for being under min_tokens


def _decode(path: Path) -> Optional[str]:
    data = path.read_bytes()
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (Excel's CSVs) is not text
    except UnicodeDecodeError:
        return None


def _table_rows(path: Path, text: str, text_field: str, topic_field: Optional[str]) -> list[tuple[str, Optional[str]]]:
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise PrepareError(f"texts: {path.name} line {n} is not JSON") from None
    else:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))  # a quoted cell keeps its line breaks
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or text_field not in row:
            raise PrepareError(f"texts: {path.name} row {n} has no {text_field!r} column (voice.text_field)")
        topic = row.get(topic_field) if topic_field else None
        out.append((str(row[text_field]), None if topic in (None, "") else str(topic)))
    return out


def read_documents(root: Path, text_field: str = "text", topic_field: Optional[str] = "topic"
                   ) -> tuple[list[Document], list[str]]:
    """(documents, names of files skipped as not UTF-8) under `root`, in path order; or one of the two tables."""
    root = root.expanduser()
    if root.is_file():
        if root.suffix.lower() not in TABLE_SUFFIXES:
            raise PrepareError(f"texts={str(root)!r} is not allowed: expected a folder of .txt/.md files, or a "
                               f".jsonl/.csv table with a {text_field!r} column")
        files, base = [root], root.parent
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + TABLE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        base = root
    else:
        raise PrepareError(f"texts={str(root)!r} is not allowed: no such folder")
    documents, skipped = [], []
    for path in files:
        rel = path.relative_to(base)
        text = _decode(path)
        if text is None:
            skipped.append(rel.as_posix())
            continue
        folder_topic = rel.parts[0] if len(rel.parts) > 1 else base.name
        if path.suffix.lower() in TABLE_SUFFIXES:
            for n, (body, topic) in enumerate(_table_rows(path, text, text_field, topic_field), 1):
                if body.strip():
                    documents.append(Document(f"{rel.as_posix()}#{n}", topic or folder_topic, body))
        elif text.strip():
            documents.append(Document(rel.as_posix(), folder_topic, text))
    if not documents:
        what = f"only files that are not UTF-8 text ({', '.join(skipped[:3])})" if skipped else \
            "no .txt, .md, .jsonl or .csv file with text"
        raise PrepareError(f"texts={str(root)!r} is not allowed: it holds {what}")
    return documents, skipped


def _sentences(paragraph: str) -> list[str]:
    return [s for s in SENTENCE_END.split(paragraph.strip()) if s]


def passages(text: str, count: Callable[[str], int], min_tokens: int, max_tokens: int) -> tuple[list[str], int]:
    """(the document's passages, how many were dropped as shorter than min_tokens)."""
    pieces: list[str] = []  # paragraphs, and sentence runs of paragraphs too long to keep whole
    for paragraph in (p.strip() for p in PARAGRAPH.split(text)):
        if not paragraph:
            continue
        if count(paragraph) <= max_tokens:
            pieces.append(paragraph)
            continue
        run = ""
        for sentence in _sentences(paragraph):
            joined = f"{run} {sentence}".strip()
            if run and count(joined) > max_tokens:
                pieces.append(run)
                joined = sentence
            run = joined
        if run:
            pieces.append(run)
    out, current = [], ""
    for piece in pieces:  # whole paragraphs, closed once a passage has min_tokens: as many examples as the text allows
        joined = f"{current}\n\n{piece}" if current else piece
        if current and (count(current) >= min_tokens or count(joined) > max_tokens):
            out.append(current)
            joined = piece
        current = joined
    if current:
        out.append(current)
    kept = [p for p in out if min_tokens <= count(p) <= max_tokens]
    return kept, len(out) - len(kept)


def split_passage(passage: str, count: Callable[[str], int], opening_tokens: int) -> tuple[str, str]:
    """(opening, rest) of a passage, cut at the last sentence end that keeps the opening within `opening_tokens`
    (at a word where even the first sentence is longer); the rest is the passage's remainder, never empty."""
    ends = [m.end() for m in SENTENCE_END.finditer(passage) if m.end() < len(passage)]
    fits = [e for e in ends if count(passage[:e]) <= opening_tokens]
    if fits:
        cut = fits[-1]
    else:
        spaces = [m.end() for m in re.finditer(r"\s+", passage) if m.end() < len(passage)]
        cut = next((s for s in reversed(spaces) if count(passage[:s]) <= opening_tokens), spaces[0] if spaces else 0)
    return passage[:cut].strip(), passage[cut:].strip()


def prepare(documents: list[Document], count: Callable[[str], int], *, min_tokens: int, max_tokens: int,
            opening_tokens: int, heldout_fraction: float, template: str, seed: int,
            skipped_files: Optional[list[str]] = None) -> Prepared:
    """Hold out whole documents, then cut every document into examples."""
    if len(documents) < 3:
        raise PrepareError(f"texts is not allowed: it holds {len(documents)} document{'s' * (len(documents) != 1)}, and "
                           "at least 3 are needed (2 to train on, whose spread Burrows' Delta standardises by, and 1 "
                           "held out for evaluation)")
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    n_held = min(max(1, round(heldout_fraction * len(documents))), len(documents) - 2)
    held = set(order[:n_held])
    train, heldout, short = [], [], 0
    for i, doc in enumerate(documents):
        kept, dropped = passages(doc.text, count, min_tokens, max_tokens)
        short += dropped
        for passage in kept:
            opening, rest = split_passage(passage, count, opening_tokens)
            example = Example(template.format(topic=doc.topic, opening=opening), rest, doc.topic, doc.name)
            (heldout if i in held else train).append(example)
    if not train and not heldout:
        raise PrepareError(f"texts is not allowed: every passage is shorter than voice.min_tokens={min_tokens} tokens "
                           f"({short} passages)")
    topics = sorted({d.topic for d in documents})
    bare = [t for t in topics if not any(e.topic == t for e in train)]
    if bare:
        raise PrepareError(f"texts is not allowed: topic {bare[0]!r} has no training passage (its documents are all "
                           "held out, or too short): add writing to it, or lower voice.heldout_fraction")
    if not heldout:
        raise PrepareError(f"texts is not allowed: the held-out documents ({n_held}) have no passage of "
                           f"voice.min_tokens={min_tokens} tokens or more")
    # every document, with passages or not: the training ones (at least 2) are what Delta standardises by
    names = {"train": sorted(d.name for i, d in enumerate(documents) if i not in held),
             "heldout": sorted(d.name for i, d in enumerate(documents) if i in held)}
    return Prepared(train, heldout, names, list(skipped_files or []), short)
