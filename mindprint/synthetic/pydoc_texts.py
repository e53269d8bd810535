"""Real human writing that ships with every CPython, for the offline voice demo: the topic texts of `pydoc_data`
(what `help("if")` shows), taken from the Python Language Reference and Library Reference.

The "author" is the Language Reference, its topics grouped by the part of the reference they come from
(statements, expressions, the data model, lexical analysis): one voice, four subjects, 55 documents. The demo's
policy first learns to write words from other texts of the same source, the Library Reference's pages on the
built-in types, string formatting and pdb, so it knows the vocabulary of Python documentation but not the author's
own texts. Topics whose paragraphs another topic repeats are left out (compound, specialnames,
else, augassign, in, id-classes, naming, exceptions, dynamic-features, typesseq-mutable: each one's text is in a
topic kept), so no paragraph is in both a training and a held-out document.

    python -m mindprint.synthetic.pydoc_texts DIR    the author's folder: DIR/<part>/<topic>.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pydoc_data.topics import topics

AUTHOR = {
    "statements": ["assert", "assignment", "async", "break", "class", "continue", "del", "for",
                   "function", "global", "if", "import", "nonlocal", "pass", "raise", "return", "try", "while",
                   "with", "yield"],
    "expressions": ["atom-identifiers", "atom-literals", "attribute-references", "await", "binary", "bitwise",
                    "booleans", "calls", "comparisons", "conversions", "dict", "exprlists", "lambda", "lists",
                    "operator-summary", "power", "shifting", "slicings", "subscriptions", "unary"],
    "data-model": ["attribute-access", "callable-types", "context-managers", "customization", "execmodel",
                   "numeric-types", "objects", "sequence-types", "types"],
    "lexical": ["floating", "identifiers", "imaginary", "integers", "numbers", "strings"],
}
WRITER = ["string-methods", "typesmapping", "typesseq", "formatstrings", "debugger", "truth",
          "typesfunctions", "typesmethods", "typesmodules", "specialattrs", "bltin-code-objects",
          "bltin-ellipsis-object", "bltin-null-object", "bltin-type-objects"]
UNDERLINE = re.compile(r"^[*=\-~^]{3,}\s*$", re.MULTILINE)  # reST heading underlines: layout, not writing


def text(topic: str) -> str:
    return UNDERLINE.sub("", topics[topic]).strip() + "\n"


def writer_texts() -> list[str]:
    return [text(t) for t in WRITER]


def write_author(folder: Path) -> int:
    """The author's documents as DIR/<part>/<topic>.txt; the number written. An existing folder is refused."""
    if folder.exists():
        raise FileExistsError(f"{folder} exists: the demo's texts are written to a new folder")
    for part, names in AUTHOR.items():
        (folder / part).mkdir(parents=True)
        for name in names:
            (folder / part / f"{name}.txt").write_text(text(name), encoding="utf-8")
    return sum(len(names) for names in AUTHOR.values())


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mindprint.synthetic.pydoc_texts DIR")
    try:
        n = write_author(Path(sys.argv[1]))
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{n} texts of the Python Language Reference in {sys.argv[1]}")


if __name__ == "__main__":
    main()
