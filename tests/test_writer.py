"""The voice demo's writing model: a tiny Qwen3 that learns words from a real text, built the same way every time and
once per machine."""

import json
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mindprint.synthetic.writer import WriterSettings, build_writer, ensure_writer

TEXTS = [topics[k] for k in ("pass", "while", "for", "if", "break", "continue", "return", "import")]
SMALL = WriterSettings(steps=40, vocab_size=512, hidden_size=64, layers=2, block=64, batch_size=8, warmup=10)


def test_the_writer_learns_and_is_built_the_same_way_twice(tmp_path):
    first = build_writer(tmp_path / "a", TEXTS, SMALL)
    build_writer(tmp_path / "b", TEXTS, SMALL)
    assert sum(first[-5:]) / 5 < sum(first[:5]) / 5 - 1.0  # next-token loss falls
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "a" / "pretraining.json").read_text())["losses"] == first


def test_the_writer_is_cached_under_a_name_that_digests_its_text(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDPRINT_TINY_DIR", str(tmp_path))
    path = ensure_writer("pydoc", TEXTS, SMALL)
    built = (tmp_path / "v1" / path.rsplit("/", 1)[1] / "config.json").stat().st_mtime_ns
    assert ensure_writer("pydoc", TEXTS, SMALL) == path  # found, not built again
    assert (tmp_path / "v1" / path.rsplit("/", 1)[1] / "config.json").stat().st_mtime_ns == built
    assert ensure_writer("pydoc", TEXTS[:-1], SMALL) != path  # another text, another model
    assert sorted(p.name.startswith("writer-pydoc-") for p in (tmp_path / "v1").iterdir()) == [True, True]


def test_a_text_shorter_than_one_window_is_refused(tmp_path):
    with pytest.raises(ValueError, match="a writer needs more text than one window"):
        build_writer(tmp_path / "w", ["pass"], SMALL)


@pytest.mark.slow
def test_the_demo_writer_writes_the_words_of_its_texts(tmp_path, monkeypatch):
    """model=writer (`${tiny:writer}`): built on first use from the Library Reference's texts, it samples words
    of those texts, not byte soup: the voice demo's style measure has words to count."""
    from mindprint.analysis.style import words
    from mindprint.cli import tiny_path
    from mindprint.synthetic.pydoc_texts import writer_texts

    monkeypatch.setenv("MINDPRINT_TINY_DIR", str(tmp_path))
    path = tiny_path("writer")
    assert path.startswith(str(tmp_path)) and json.loads((Path(path) / "pretraining.json").read_text())["losses"][-1] < 3
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    torch.manual_seed(0)
    untrained = AutoModelForCausalLM.from_config(model.config).eval()  # the same model before its pretraining
    known = set(words("\n".join(writer_texts())))

    def known_share(m) -> float:
        torch.manual_seed(0)
        ids = m.generate(**tok(["The"], return_tensors="pt"), do_sample=True, max_new_tokens=200, top_k=0)
        sampled = words(tok.decode(ids[0], skip_special_tokens=True))
        return sum(w in known for w in sampled) / max(len(sampled), 1)

    print(f"share of sampled words found in the texts: {known_share(model):.2f} (before pretraining "
          f"{known_share(untrained):.2f})")
    # its tokens are pieces of the texts' words, so even random weights join some into words (0.40 measured); the
    # pretrained writer joins them into the texts' words far more often (0.62 measured)
    assert known_share(model) > known_share(untrained) + 0.15
