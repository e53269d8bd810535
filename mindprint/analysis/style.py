"""Style distance independent of any reward model: Burrows' Delta (Burrows 2002, "'Delta': a Measure of Stylistic
Difference and a Guide to Likely Authorship", Literary and Linguistic Computing 17(3)).

Fit on the author's training documents d_1..d_m:
    W       the n most frequent words of all of them together (ties broken alphabetically)
    f_w(T)  relative frequency of word w in a text T: count(w in T) / words in T
    μ_w, σ_w  mean and standard deviation (n − 1 in its denominator) of f_w(d_j) over the training documents
    z_w(T)  = (f_w(T) − μ_w) / σ_w
Delta(A, B) = (1/|W'|) Σ_{w ∈ W'} |z_w(A) − z_w(B)|, over W' = the words of W whose σ_w > 0 (a word used at the same
rate in every document cannot be standardised). Lower is closer; identical texts give 0. Words are lower-cased runs of
letters, an inner apostrophe kept (don't, author's).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def words(text: str) -> list[str]:
    """The text's words, lower-cased: letters (any script), with inner apostrophes (’ read as ')."""
    return [w.lower().replace("’", "'") for w in WORD.findall(text)]


def frequencies(text: str, vocabulary: Sequence[str]) -> list[float]:
    """f_w(text) for each w of `vocabulary`: count / number of words (0 for a text without words)."""
    tokens = words(text)
    counts = Counter(tokens)
    return [counts[w] / len(tokens) if tokens else 0.0 for w in vocabulary]


@dataclass(frozen=True)
class DeltaBasis:
    """What Delta standardises with: the author's most frequent words, their mean frequency and its spread across
    the author's training documents."""

    words: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, documents: Sequence[str], n_words: int) -> DeltaBasis:
        if len(documents) < 2:
            raise ValueError(f"Burrows' Delta needs at least 2 training documents for a spread, got {len(documents)}")
        total = Counter(w for doc in documents for w in words(doc))
        top = [w for w, _ in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:n_words]]
        table = [frequencies(doc, top) for doc in documents]
        mean = [sum(col) / len(col) for col in zip(*table)]
        std = [math.sqrt(sum((x - m) ** 2 for x in col) / (len(col) - 1)) for col, m in zip(zip(*table), mean)]
        kept = [i for i, s in enumerate(std) if s > 0]
        return cls(tuple(top[i] for i in kept), tuple(mean[i] for i in kept), tuple(std[i] for i in kept))

    def z(self, text: str) -> list[float]:
        """z_w(text) for each word of the basis."""
        return [(f - m) / s for f, m, s in zip(frequencies(text, self.words), self.mean, self.std)]

    def delta(self, a: str, b: str) -> float:
        """Burrows' Delta between two texts: the mean absolute difference of their z-scores."""
        if not self.words:
            raise ValueError("Burrows' Delta has no word to compare: every frequent word has the same rate in every "
                             "training document")
        return sum(abs(x - y) for x, y in zip(self.z(a), self.z(b))) / len(self.words)


@dataclass(frozen=True)
class StyleTarget:
    """An author's style as a run's evaluation reads it (`eval.style`): the Delta basis fitted on their training
    documents and their held-out text, which a model's generations are compared with as one text."""

    basis: DeltaBasis
    text: str

    def distance(self, generations: Sequence[str]) -> float:
        """Burrows' Delta between the generations (joined) and the author's held-out text."""
        return self.basis.delta("\n\n".join(generations), self.text)

    def save(self, path: Path) -> None:
        basis = {"words": list(self.basis.words), "mean": list(self.basis.mean), "std": list(self.basis.std)}
        path.write_text(json.dumps({"basis": basis, "text": self.text}, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> StyleTarget:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        b = data["basis"]
        return cls(DeltaBasis(tuple(b["words"]), tuple(b["mean"]), tuple(b["std"])), data["text"])
