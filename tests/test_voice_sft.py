"""The SFT stage: TRL's SFTTrainer learns the completions only, and lowers the held-out perplexity."""

import torch
from transformers import AutoModelForCausalLM

from mindprint.engine.models import load_tokenizer
from mindprint.voice.prepare import Example
from mindprint.voice.sft import SFTSettings, perplexity, train_sft, trainer_for

CPU = torch.device("cpu")


def examples(n: int, start: int = 0) -> list[Example]:
    """Writing with a habit: every completion closes its thought the same way, whatever the prompt's length."""
    return [Example(prompt=f"Write about the sea{' again' * (i % 3)}: the tide {i}",
                    completion=f"comes in slowly, and the harbour light shows it, quietly, as it does {i % 5}.",
                    topic="sea", document=f"doc-{i}") for i in range(start, start + n)]


def test_the_loss_covers_completion_tokens_only(tmp_path, tiny):
    tokenizer = load_tokenizer("model.name", tiny["policy"], padding_side="right")
    data = examples(3)
    trainer = trainer_for(tiny["policy"], tokenizer, data, SFTSettings(batch_size=3), tmp_path, seed=0, device=CPU)
    batch = next(iter(trainer.get_train_dataloader()))
    seen = set()
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        ids, labels = ids[mask.bool()].tolist(), labels[mask.bool()].tolist()
        match = [e for e in data if ids == tokenizer(e.prompt, add_special_tokens=False)["input_ids"]
                 + tokenizer(e.completion + tokenizer.eos_token, add_special_tokens=False)["input_ids"]]
        assert len(match) == 1
        n_prompt = len(tokenizer(match[0].prompt, add_special_tokens=False)["input_ids"])
        assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
        seen.add(match[0].document)
    assert len(seen) == 3 and (batch["labels"][~batch["attention_mask"].bool()] == -100).all()  # padding unlearnt


def test_sft_lowers_the_held_out_perplexity(tmp_path, tiny):
    tokenizer = load_tokenizer("model.name", tiny["policy"], padding_side="right")
    train, heldout = examples(24), examples(6, start=100)
    base = perplexity(AutoModelForCausalLM.from_pretrained(tiny["policy"]), tokenizer, heldout)
    out = train_sft(tiny["policy"], tokenizer, train, SFTSettings(epochs=4, batch_size=8, learning_rate=3e-3,
                                                                   lora_rank=8, lora_alpha=16),
                    tmp_path / "sft", seed=0, device=CPU)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]  # nothing of the trainer left beside it
    tuned = perplexity(AutoModelForCausalLM.from_pretrained(out), tokenizer, heldout)
    print(f"held-out perplexity: base {base:.1f} → SFT {tuned:.1f}")
    assert tuned < base / 4


def test_pairs_hold_the_authors_completion_and_the_models_sample_for_the_same_prompt(tmp_path, tiny):
    from mindprint.voice.pairs import make_pairs, sample, write_pairs

    tokenizer = load_tokenizer("model.name", tiny["policy"], padding_side="right")
    model = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    data = examples(5)
    batched = sample(model, tokenizer, [e.prompt for e in data], max_new_tokens=8, temperature=0.0, batch_size=4,
                     seed=0)
    alone = [sample(model, tokenizer, [e.prompt], max_new_tokens=8, temperature=0.0, batch_size=1, seed=0)[0]
             for e in data]
    assert batched == alone and tokenizer.padding_side == "right"  # batching changes no sample
    sampled = sample(model, tokenizer, [e.prompt for e in data], 8, temperature=1.0, batch_size=4, seed=3)
    assert sampled == sample(model, tokenizer, [e.prompt for e in data], 8, temperature=1.0, batch_size=4, seed=3)
    pairs = make_pairs(data, sampled)
    assert [p["chosen"] for p in pairs] == [e.completion for e in data]
    assert [p["rejected"] for p in pairs] == sampled and [p["prompt"] for p in pairs] == [e.prompt for e in data]
    write_pairs(pairs, tmp_path / "pairs.jsonl")
    assert (tmp_path / "pairs.jsonl").read_text().count("\n") == 5 and not (tmp_path / "pairs.tmp").exists()
