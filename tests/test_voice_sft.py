"""The SFT stage: TRL's SFTTrainer learns the completions only, and lowers the held-out perplexity."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from mindprint.config import SFTConfig
from mindprint.engine.models import load_tokenizer
from mindprint.voice.prepare import Example
from mindprint.voice.sft import perplexity, train_sft, trainer_for

CPU = torch.device("cpu")


def examples(n: int, start: int = 0) -> list[Example]:
    """Writing with a habit: every completion closes its thought the same way, whatever the prompt's length."""
    return [Example(prompt=f"Write about the sea{' again' * (i % 3)}: the tide {i}",
                    completion=f"comes in slowly, and the harbour light shows it, quietly, as it does {i % 5}.",
                    topic="sea", document=f"doc-{i}") for i in range(start, start + n)]


def test_the_loss_covers_completion_tokens_only(tmp_path, tiny):
    tokenizer = load_tokenizer("model.name", tiny["policy"], padding_side="right")
    data = examples(3)
    trainer = trainer_for(tiny["policy"], tokenizer, data, SFTConfig(batch_size=3), tmp_path, seed=0, device=CPU)
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
    out = train_sft(tiny["policy"], tokenizer, train, SFTConfig(epochs=4, batch_size=8, learning_rate=3e-3,
                                                                   lora_rank=8, lora_alpha=16),
                    tmp_path / "sft", seed=0, device=CPU)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]  # nothing of the trainer left beside it
    tuned = perplexity(AutoModelForCausalLM.from_pretrained(out), tokenizer, heldout)
    print(f"held-out perplexity: base {base:.1f} → SFT {tuned:.1f}")
    assert tuned < base / 4


def test_pairs_hold_the_authors_completion_and_the_models_sample_for_the_same_prompt(tiny):
    from mindprint.voice.pipeline import pairs
    from mindprint.voice.sampling import decode, sample

    tokenizer = load_tokenizer("model.name", tiny["policy"], padding_side="right")
    model = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    data = examples(5)
    prompts = [e.prompt for e in data]
    batched = sample(model, tokenizer, prompts, max_new_tokens=8, temperature=0.0, batch_size=4, seed=0)
    alone = [sample(model, tokenizer, [p], max_new_tokens=8, temperature=0.0, batch_size=1, seed=0)[0] for p in prompts]
    assert batched == alone and tokenizer.padding_side == "right"  # batching changes no greedy sample
    budgets = [3, 8, 5, 1, 8]  # the pairs stage: each sample as long as the author's completion beside it
    cut = sample(model, tokenizer, prompts, budgets, temperature=0.0, batch_size=4, seed=0)
    assert cut == [row[:n] for row, n in zip(batched, budgets)] and [len(r) for r in cut] == budgets
    sampled = decode(tokenizer, sample(model, tokenizer, prompts, 8, temperature=1.0, batch_size=4, seed=3))
    assert sampled == decode(tokenizer, sample(model, tokenizer, prompts, 8, temperature=1.0, batch_size=4, seed=3))
    rows = pairs(data, sampled)
    assert [p["chosen"] for p in rows] == [e.completion for e in data]
    assert [p["rejected"] for p in rows] == sampled and [p["prompt"] for p in rows] == prompts
    assert [p["document"] for p in rows] == [e.document for e in data]


def test_sequence_kl_is_the_exact_kl_summed_over_each_response(tiny):
    """Responses of 3, 1 and 5 tokens in one left-padded batch give what each gives alone, and that is
    Σ_t Σ_v p(v) (log p(v) − log q(v)) computed by hand from unpadded forwards at the temperature."""
    from mindprint.voice.sampling import sequence_kl

    tokenizer = load_tokenizer("model.name", tiny["policy"], padding_side="right")
    p_model = AutoModelForCausalLM.from_pretrained(tiny["policy"]).eval()
    torch.manual_seed(0)
    q_model = AutoModelForCausalLM.from_pretrained(tiny["policy"]).eval()
    with torch.no_grad():
        for param in q_model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    prompts = ["the sea", "a long prompt about the harbour at night", "x"]
    responses = [[5, 9, 11], [7], [3, 4, 5, 6, 7]]
    batched = sequence_kl(p_model, q_model, tokenizer, prompts, responses, temperature=0.7, batch_size=3)
    alone = [sequence_kl(p_model, q_model, tokenizer, [p], [r], 0.7, 1)[0] for p, r in zip(prompts, responses)]
    by_hand = []
    for prompt, response in zip(prompts, responses):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = torch.tensor([ids + response])
        with torch.no_grad():
            lp, lq = (torch.log_softmax(m(full).logits[0, len(ids) - 1:-1] / 0.7, -1) for m in (p_model, q_model))
        by_hand.append((lp.exp() * (lp - lq)).sum().item())
    assert batched == pytest.approx(by_hand, rel=1e-4) and alone == pytest.approx(by_hand, rel=1e-4)
    assert min(by_hand) > 0
    assert sequence_kl(p_model, p_model, tokenizer, prompts, responses, 0.7, 3) == pytest.approx([0, 0, 0], abs=1e-6)
