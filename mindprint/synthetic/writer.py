"""A tiny Qwen3-architecture model that writes words: pretrained briefly on a real text, for the offline voice demo.

A random-weight tiny policy writes byte soup, on which a measure of style means nothing; this one is first taught a
language (a byte-level BPE tokenizer trained on the text, then next-token prediction on random windows of it), so
its samples are words and its voice can move. Built deterministically (seeded, on one thread) and cached like the
tiny models, under a name that digests the text and every setting, so a changed text is a new model.

The loop is a plain torch one rather than transformers' Trainer: a few hundred steps of next-token loss on random
windows, where the Trainer's dataset, collator and scheduler plumbing would outweigh the training itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3ForCausalLM

from mindprint.console import hide_progress_bars
from mindprint.synthetic.tiny import tiny_config, tiny_root
from mindprint.synthetic.tokenizers import CHATML, SPECIALS, bpe_tokenizer


@dataclass(frozen=True)
class WriterSettings:
    steps: int = 300  # past ~300 the loss falls below 2 nats: it recites the text rather than writing
    vocab_size: int = 1024
    hidden_size: int = 128
    layers: int = 4
    block: int = 128  # tokens per training window
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup: int = 50
    seed: int = 0


def writer_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Qwen3's layout (eos <|im_end|>, pad <|endoftext|>, ChatML), its vocabulary learnt from `texts`."""
    return bpe_tokenizer(texts, vocab_size, SPECIALS, CHATML, "<|im_end|>", "<|endoftext|>")


def pretrain(model: Qwen3ForCausalLM, ids: torch.Tensor, s: WriterSettings) -> list[float]:
    """Next-token loss on `s.steps` batches of random windows; AdamW, linear warm-up then cosine decay. The losses."""
    gen = torch.Generator().manual_seed(s.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / s.warmup)
                                              * 0.5 * (1 + math.cos(math.pi * min(t, s.steps) / s.steps)))
    model.train()
    losses = []
    for _ in range(s.steps):
        starts = torch.randint(0, len(ids) - s.block, (s.batch_size,), generator=gen)
        batch = torch.stack([ids[i:i + s.block] for i in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss  # the model shifts the labels: each token predicts the next
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def build_writer(path: Path, texts: Sequence[str], s: WriterSettings) -> list[float]:
    """Tokenizer, model and pretraining; saved to `path` with `save_pretrained`. The training losses."""
    tok = writer_tokenizer(texts, s.vocab_size)
    torch.manual_seed(s.seed)
    config = tiny_config(tok, hidden_size=s.hidden_size, intermediate_size=2 * s.hidden_size,
                         num_hidden_layers=s.layers, head_dim=s.hidden_size // 4, initializer_range=0.02)
    model = Qwen3ForCausalLM(config)
    ids = torch.tensor(tok("\n\n".join(texts), add_special_tokens=False)["input_ids"])
    if len(ids) <= s.block or s.warmup < 1 or s.steps < 1:
        raise ValueError(f"a writer needs more text than one window ({len(ids)} tokens, block {s.block}), and steps and "
                         f"warmup >= 1 (got {s.steps}, {s.warmup})")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order, so the same model on every build here
    try:
        losses = pretrain(model, ids, s)
    finally:
        torch.set_num_threads(threads)
    stops = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "pretraining.json").write_text(json.dumps({"settings": asdict(s), "losses": losses}))
    return losses


def ensure_writer(name: str, texts: Sequence[str], settings: WriterSettings = WriterSettings()) -> str:
    """Path of the writer pretrained on `texts` with `settings`, building it on first use (aside, then renamed)."""
    digest = hashlib.sha256(json.dumps([list(texts), asdict(settings)]).encode()).hexdigest()[:12]
    target = tiny_root() / f"writer-{name}-{digest}"
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        hide_progress_bars()
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".writer-{name}-"))
        try:
            build_writer(tmp, texts, settings)
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 would keep the cached model from other users of the machine
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is the same
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
