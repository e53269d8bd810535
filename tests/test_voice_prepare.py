"""The voice pipeline's first stage and its measure: writing becomes prompt/completion examples with whole documents
held out, and Burrows' Delta as Burrows defined it."""

import math

import pytest

from mindprint.analysis.style import DeltaBasis, words
from mindprint.voice.prepare import PrepareError, passages, prepare, read_documents, split_passage

TEMPLATE = "Write about {topic}, going on from this opening:\n{opening}"


def count(text: str) -> int:  # tokens, as whitespace words: the stage takes any counter
    return len(text.split())


def sentences(tag: str, n: int) -> str:
    return " ".join(f"The {tag} sentence number {i} runs on for a while." for i in range(n))


def folder(root, topics=("essays", "letters"), docs=3, paragraphs=4):
    for topic in topics:
        for d in range(docs):
            path = root / topic / f"{topic}-{d}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n\n".join(sentences(f"{topic}{d}p{p}", 3) for p in range(paragraphs)))
    return root


def run(documents, **kw):
    settings = dict(min_tokens=20, max_tokens=60, opening_tokens=12, heldout_fraction=0.34, template=TEMPLATE, seed=0)
    return prepare(documents, count, **{**settings, **kw})


def test_held_out_documents_never_reach_training(tmp_path):
    documents, skipped = read_documents(folder(tmp_path / "texts"))
    assert skipped == [] and len(documents) == 6 and {d.topic for d in documents} == {"essays", "letters"}
    data = run(documents)
    assert data.documents["heldout"] and not set(data.documents["heldout"]) & set(data.documents["train"])
    train_text = "\n".join(e.prompt + "\n" + e.completion for e in data.train)
    for example in data.heldout:
        tag = example.completion.split()[1]  # e.g. "essays1p2": names the document and paragraph
        assert tag not in train_text, tag
    for example in data.train + data.heldout:
        assert example.prompt.startswith(f"Write about {example.topic}, going on from this opening:\n")
        assert count(example.prompt.split("\n", 1)[1]) <= 12 and example.completion


def test_passages_keep_paragraphs_whole_and_cut_long_ones_at_sentences():
    text = "\n\n".join([sentences("a", 1), sentences("b", 2), sentences("c", 12), "Too short."])
    kept, dropped = passages(text, count, min_tokens=15, max_tokens=40)
    assert dropped == 1  # the short tail
    assert kept[0] == sentences("a", 1) + "\n\n" + sentences("b", 2)  # joined until min_tokens
    assert all(15 <= count(p) <= 40 for p in kept)
    assert " ".join(kept[1:]).split() == sentences("c", 12).split()  # the long paragraph, cut at sentence ends
    opening, rest = split_passage(kept[0], count, opening_tokens=15)
    assert opening == "The a sentence number 0 runs on for a while." and kept[0] == f"{opening}\n\n{rest}"


def test_a_non_utf8_file_among_good_ones_is_skipped_and_named(tmp_path):
    root = folder(tmp_path / "texts")
    (root / "essays" / "latin1.txt").write_bytes("caf\xe9 and more words".encode("latin-1"))
    (root / "essays" / "picture.txt").write_bytes(b"\x89PNG\x00\x00binary")
    documents, skipped = read_documents(root)
    assert skipped == ["essays/latin1.txt", "essays/picture.txt"] and len(documents) == 6


def test_tables_keep_their_paragraphs_and_name_a_bad_line(tmp_path):
    table = tmp_path / "writing.csv"
    body = "First paragraph, quoted.\n\nSecond paragraph."
    table.write_bytes(b"\xef\xbb\xbf" + f'text,topic\n"{body}",letters\n"Another, short.",\n'.encode())  # Excel's BOM
    documents, _ = read_documents(table)
    assert [(d.text, d.topic) for d in documents] == [(body, "letters"), ("Another, short.", tmp_path.name)]
    lines = tmp_path / "writing.jsonl"
    lines.write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(PrepareError, match="writing.jsonl line 2 is not JSON"):
        read_documents(lines)


@pytest.mark.parametrize("make, expected", [
    (lambda root: root.mkdir(), "holds no .txt, .md, .jsonl or .csv file with text"),
    (lambda root: (root.mkdir(), (root / "a.txt").write_bytes(b"\xff\xfe\x00x")), "only files that are not UTF-8 text"),
])
def test_a_folder_without_writing_is_refused(tmp_path, make, expected):
    make(tmp_path / "texts")
    with pytest.raises(PrepareError, match=expected):
        read_documents(tmp_path / "texts")


def test_writing_that_cannot_be_split_is_refused_in_one_line(tmp_path):
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(PrepareError, match=r"expected a folder of \.txt/\.md files, or a \.jsonl/\.csv table"):
        read_documents(tmp_path / "notes.pdf")
    documents, _ = read_documents(folder(tmp_path / "texts"))
    with pytest.raises(PrepareError, match="holds 1 document, and at least 3 are needed"):
        run(documents[:1])
    with pytest.raises(PrepareError, match="every passage is shorter than voice.min_tokens=500"):
        run(documents, min_tokens=500, max_tokens=600)
    one_letter = [d for d in documents if d.topic == "essays"] + [d for d in documents if d.topic == "letters"][:1]
    seeds = [s for s in range(20) if _letter_held(one_letter, s)]
    assert seeds  # some seed holds the lone letter out
    with pytest.raises(PrepareError, match="topic 'letters' has no training passage"):
        run(one_letter, heldout_fraction=0.5, seed=seeds[0])


def _letter_held(documents, seed) -> bool:
    try:
        run(documents, heldout_fraction=0.5, seed=seed)
    except PrepareError as err:
        return "letters" in str(err)
    return False


def test_burrows_delta_by_hand():
    """Three training documents, the three most frequent words (the 4, cat 3, dog 3), worked out on paper:
    μ = (1/3, 1/4, 1/4), σ = (√3/12, 1/4, 1/4); A = "the cat": z = (2/√3, 1, −1); B = "dog dog the a":
    z = (−1/√3, −1, 1); Delta = (√3 + 2 + 2)/3."""
    basis = DeltaBasis.fit(["the cat the dog", "the dog a dog", "a cat the cat"], n_words=3)
    assert basis.words == ("the", "cat", "dog")
    assert basis.mean == pytest.approx((1 / 3, 1 / 4, 1 / 4)) and basis.std == pytest.approx((math.sqrt(3) / 12, .25, .25))
    assert basis.z("the cat") == pytest.approx([2 / math.sqrt(3), 1, -1])
    assert basis.delta("the cat", "dog dog the a") == pytest.approx((math.sqrt(3) + 4) / 3)
    assert basis.delta("The cat, the dog!", "the cat the dog") == 0.0  # identical words: 0
    assert words("Don’t say it's 42 cats") == ["don't", "say", "it's", "cats"]


def test_every_document_is_in_one_split_even_one_without_a_passage(tmp_path):
    """Delta standardises by the spread between the training documents, all of them: a document too short for a
    passage still counts (and at least 2 are always left to train on)."""
    from mindprint.voice.prepare import Document

    documents, _ = read_documents(folder(tmp_path / "texts"))
    documents.append(Document("essays/short.md", "essays", "Too short to be a passage."))
    data = run(documents)
    train, held = data.documents["train"], data.documents["heldout"]
    assert sorted(train + held) == sorted(d.name for d in documents) and not set(train) & set(held)
    assert "essays/short.md" not in {e.document for e in data.train + data.heldout}
    essays, _ = read_documents(folder(tmp_path / "essays", topics=("essays",), docs=5))
    for n in range(3, 6):  # however large the held-out fraction, 2 documents are left to train on
        assert len(run(essays[:n], heldout_fraction=0.9).documents["train"]) == 2
