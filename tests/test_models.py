"""The four models from config: exact LoRA size, 8-bit reward model, reference, what trains."""

import bitsandbytes as bnb
import pytest
import torch
from transformers import AutoModelForCausalLM

from mindprint.cli import compose
from mindprint.config import LoraConfig, RewardConfig
from mindprint.engine.models import apply_lora, build_models, build_reward
from mindprint.engine.report import count_parameters, lora_formula
from mindprint.synthetic.shapes import QWEN3_0_6B, qwen3_config

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def meta_policy(lora: LoraConfig):
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(qwen3_config(QWEN3_0_6B))
    return apply_lora(base, lora, lora.rank, "CAUSAL_LM", "lora.target_modules")


@pytest.mark.parametrize(
    "lora, expected",
    [
        (LoraConfig(rank=32, alpha=64.0, target_modules=SEVEN), 20_185_088),
        (LoraConfig(rank=1, alpha=1.0, target_modules=["o_proj", "v_proj", "up_proj", "down_proj"]), 372_736),
    ],
)
def test_exact_lora_count_at_qwen3_0_6b_shapes(lora, expected):
    policy = meta_policy(lora)
    _, trainable = count_parameters(policy)
    r, span = lora_formula(policy)
    assert trainable == expected
    assert r * span == expected  # r × Σ(in_features + out_features), what the dry-run prints


@pytest.fixture(scope="module")
def demo_models(tiny):
    cfg = compose(["+experiment=demo", "reward=tiny"])
    return build_models(cfg, torch.device("cpu"))


def test_reward_model_linear_layers_are_8bit(demo_models):
    linears = [m for m in demo_models.reward.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(linears) == 2 * 7  # every projection of both layers; the 1-logit head stays full precision
    assert all(m.weight.dtype == torch.int8 for m in linears)


def test_reward_model_quantization_none_and_4bit(tiny):
    plain, _ = build_reward(RewardConfig(name=tiny["reward"], quantization="none"), torch.device("cpu"), torch.float32)
    assert not any(isinstance(m, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)) for m in plain.modules())
    four, _ = build_reward(RewardConfig(name=tiny["reward"], quantization="4bit"), torch.device("cpu"), torch.float32)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in four.modules()) == 14


def test_only_lora_and_value_model_require_grad(demo_models):
    trainable_policy = [n for n, p in demo_models.policy.named_parameters() if p.requires_grad]
    assert trainable_policy and all("lora_" in n for n in trainable_policy)
    assert all(p.requires_grad for p in demo_models.value.parameters())
    assert not any(p.requires_grad for p in demo_models.reward.parameters())


def test_value_model_through_its_own_lora(tiny):
    models = build_models(compose(["+experiment=demo", "lora.value_rank=4"]), torch.device("cpu"))
    trainable = [n for n, p in models.value.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert any("score" in n for n in trainable)  # the fresh head always trains


def test_reference_gives_the_base_models_logits(demo_models, tiny):
    base = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    # make the adapter non-trivial so "disabled" has something to disable
    with torch.no_grad():
        for n, p in demo_models.policy.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
        adapted = demo_models.policy(input_ids=ids).logits
        with demo_models.reference_mode() as ref:
            ref_logits = ref(input_ids=ids).logits
        expected = base(input_ids=ids).logits
        for n, p in demo_models.policy.named_parameters():
            if "lora_B" in n:
                p.sub_(0.5)
    torch.testing.assert_close(ref_logits, expected)
    assert not torch.allclose(adapted, expected)


def test_reference_copy_is_frozen_and_matches_base(tiny):
    models = build_models(compose(["+experiment=demo", "model.reference=copy"]), torch.device("cpu"))
    assert models.reference is not None and not any(p.requires_grad for p in models.reference.parameters())
    ids = torch.tensor([[5, 17, 42]])
    with torch.no_grad():
        torch.testing.assert_close(models.reference(input_ids=ids).logits, models.policy(input_ids=ids).logits)


def test_pad_distinct_from_eos_and_two_stop_ids(demo_models):
    tok = demo_models.tokenizer
    assert tok.pad_token_id != tok.eos_token_id
    assert sorted(demo_models.stop_ids) == sorted([tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")])
    assert tok.padding_side == "left"


@pytest.mark.parametrize("value_rank", [0, 4])
def test_trained_tensors_stay_fp32_when_the_model_loads_in_bf16(tiny, value_rank):
    """On a GPU, model.dtype=auto loads bf16; AdamW on bf16 weights would lose most small updates."""
    from mindprint.engine.models import TokenValueModel

    models = build_models(compose(["+experiment=demo", "model.dtype=bfloat16", f"lora.value_rank={value_rank}"]),
                          torch.device("cpu"))
    for model in (models.policy, models.value):
        trained = [p for p in model.parameters() if p.requires_grad]
        assert trained and all(p.dtype == torch.float32 for p in trained)
    assert any(p.dtype == torch.bfloat16 for p in models.policy.parameters() if not p.requires_grad)
    ids = torch.tensor([[5, 17, 42]])
    values = TokenValueModel(models.value)(ids, torch.ones_like(ids), torch.arange(3)[None])
    assert values.shape == (1, 3) and values.dtype == torch.float32
    values.sum().backward()
    assert all(p.grad is not None for p in models.value.parameters() if p.requires_grad)
