"""The four models of a run, built from `RunConfig`.

policy     AutoModelForCausalLM + peft LoRA (only the adapter trains)
value      AutoModelForSequenceClassification(num_labels=1) on the model group's base, fresh head;
           trained fully, or through its own LoRA when lora.value_rank > 0; not built for a critic-free algo
reference  the policy with its adapter disabled (no extra memory), or a separate frozen copy
reward     AutoModelForSequenceClassification with its own tokenizer, bitsandbytes-quantized, frozen
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import peft
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mindprint.config import ConfigError, LoraConfig, ModelConfig, RewardConfig, RunConfig


@dataclass
class Models:
    policy: peft.PeftModel
    value: Optional[nn.Module]  # None for a critic-free algorithm (algo.name in CRITIC_FREE)
    reference: Optional[PreTrainedModel]  # None: the policy with its adapter disabled
    reward: Optional[PreTrainedModel]  # None when a rule scores
    tokenizer: PreTrainedTokenizerBase  # the policy's
    reward_tokenizer: Optional[PreTrainedTokenizerBase]
    stop_ids: list[int]

    @contextmanager
    def reference_mode(self) -> Iterator[nn.Module]:
        """The reference model to call: a frozen copy, or the policy with its adapter switched off."""
        if self.reference is not None:
            yield self.reference
        else:
            with self.policy.disable_adapter():
                yield self.policy


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is not allowed: no CUDA device is visible (expected auto or cpu)")
    return torch.device(name)


def use_tf32(enabled: bool) -> None:
    """fp32 matmuls and convolutions as TF32 on tensor cores (GPUs from Ampere on; no effect elsewhere).

    Here, not in run.py: a sweep's launcher pickles run.py's code, and torch.backends.cudnn does not pickle.
    """
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return getattr(torch, name)


def _looks_local(name: str) -> bool:
    return name.startswith((os.sep, ".", "~")) or name.count("/") > 1 or os.path.exists(name)


def load_config(key: str, name: str):
    """AutoConfig for `name`, turning a missing path or an unreachable hub into a one-line ConfigError."""
    if _looks_local(name) and not os.path.isdir(os.path.expanduser(name)):
        raise ConfigError(f"{key}={name!r} is not allowed: no such directory (expected a model directory or hub name)")
    try:
        return AutoConfig.from_pretrained(os.path.expanduser(name))
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0]
        raise ConfigError(f"{key}={name!r} could not be loaded (expected a model directory or hub name): {reason}")


def load_tokenizer(key: str, name: str, padding_side: str) -> PreTrainedTokenizerBase:
    load_config(key, name)
    tok = AutoTokenizer.from_pretrained(os.path.expanduser(name), padding_side=padding_side)
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # Masks never come from the pad id, but a pad distinct from EOS keeps decoded text and
        # the reward model's last-token pooling unambiguous.
        tok.add_special_tokens({"pad_token": "<|pad|>"})
    return tok


def is_dropout_rate(name: str) -> bool:
    """Attribute names that hold a dropout rate across architectures: attention_dropout, hidden_dropout,
    classifier_dropout, attention_probs_dropout_prob, resid_pdrop, ..."""
    return "dropout" in name or name.endswith("pdrop")


def disable_dropout(model: nn.Module) -> None:
    """PPO's ratio must be exactly 1 before an update: zero every dropout rate, in modules and configs.

    Modules copy their rate when they are built (Qwen3Attention keeps `attention_dropout` and applies it in
    train mode), so the rate is zeroed on every module that holds one, not only in the config.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for holder in (module, getattr(module, "config", None)):
            if holder is None:
                continue
            names = holder.to_dict() if hasattr(holder, "to_dict") else vars(holder)
            for attr in [a for a in names if is_dropout_rate(a)]:
                if isinstance(getattr(holder, attr, None), float):
                    setattr(holder, attr, 0.0)


def freeze(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    model.eval()
    return model


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a response: the generation config's EOS ids (Qwen3 has two) and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def own_generation_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Replace the checkpoint's generation config by one holding only its stop ids and our pad id.

    generate() fills every field it is not given from the model's generation config, so a checkpoint's
    temperature, top_k, repetition_penalty or no_repeat_ngram_size (Qwen3-0.6B ships the first three)
    would reshape what is sampled while the PPO ratio and the KL are computed from the plain logits.
    The trainer passes its sampling settings on every call (rollout.Actor.generation_config).
    """
    model.generation_config = GenerationConfig(eos_token_id=stop_token_ids(model, tokenizer),
                                               pad_token_id=tokenizer.pad_token_id)


def sampling_config(max_new_tokens: int, temperature: float, stop_ids: list[int], pad_id: int,
                    **extra) -> GenerationConfig:
    """Plain temperature sampling (greedy at 0) and nothing else: no top-k, top-p or other logits processor, so the
    log-probs computed from logits/temperature are the sampling distribution's. Every field is set here or is
    neutral in transformers' global defaults (a model's own generation config is replaced when it is loaded:
    `own_generation_config`)."""
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else {}
    return GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=pad_id, **sampling,
                            **extra)


def match_vocab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Room in the embeddings for every id of the tokenizer (a pad that load_tokenizer added), and its pad id."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id


def lora_targets_error(key: str, targets: list[str], model: nn.Module) -> ConfigError:
    present = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
    return ConfigError(f"{key}={list(targets)} is not allowed: not in the model (its Linear layers: {', '.join(present)})")


def apply_lora(model: PreTrainedModel, cfg: LoraConfig, rank: int, task_type: str, key: str) -> peft.PeftModel:
    lora = peft.LoraConfig(
        r=rank,
        lora_alpha=cfg.alpha if rank == cfg.rank else 2 * rank,
        target_modules=list(cfg.target_modules),
        lora_dropout=cfg.dropout,
        task_type=task_type,
    )
    try:
        return peft.get_peft_model(model, lora)
    except ValueError as err:
        if "not found in the base model" in str(err):
            raise lora_targets_error(key, cfg.target_modules, model) from None
        raise


def trainable_in_fp32(model: nn.Module) -> nn.Module:
    """Keep every trained tensor in fp32 even when the frozen weights are bf16: AdamW steps of lr≈1e-5 fall
    below bf16's resolution (8 bits of mantissa) and would mostly vanish."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def checkpoint_activations(model: nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward instead of keeping them (non-reentrant
    torch.utils.checkpoint). transformers 5.x renamed gradient_checkpointing_enable, which now warns, to
    activation_checkpointing_enable; earlier 5.x releases have only the old name."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_policy(cfg: ModelConfig, lora: LoraConfig, tokenizer, device, dtype) -> peft.PeftModel:
    load_config("model.name", cfg.name)
    base = AutoModelForCausalLM.from_pretrained(os.path.expanduser(cfg.name), dtype=dtype).to(device)
    match_vocab(base, tokenizer)
    disable_dropout(base)
    own_generation_config(base, tokenizer)
    policy = apply_lora(base, lora, lora.rank, "CAUSAL_LM", "lora.target_modules")
    if cfg.gradient_checkpointing:
        checkpoint_activations(policy)
    return trainable_in_fp32(policy)


def build_value(cfg: ModelConfig, lora: LoraConfig, tokenizer, device, dtype) -> nn.Module:
    name = cfg.value_name or cfg.name
    load_config("model.value_name" if cfg.value_name else "model.name", name)
    # A causal-LM checkpoint loads its backbone here; the 1-label score head starts fresh.
    value = AutoModelForSequenceClassification.from_pretrained(os.path.expanduser(name), num_labels=1, dtype=dtype)
    value = value.to(device)
    match_vocab(value, tokenizer)
    disable_dropout(value)
    if lora.value_rank > 0:
        value = apply_lora(value, lora, lora.value_rank, "SEQ_CLS", "lora.target_modules")
    if cfg.gradient_checkpointing:
        checkpoint_activations(value)
    return trainable_in_fp32(value)


def build_reference(cfg: ModelConfig, policy: peft.PeftModel, tokenizer, device, dtype) -> Optional[PreTrainedModel]:
    """None for the policy with its adapter disabled, or a frozen copy of the policy's base model."""
    if cfg.reference == "adapter_disabled":
        return None
    ref = AutoModelForCausalLM.from_pretrained(os.path.expanduser(cfg.name), dtype=dtype).to(device)
    resized = len(tokenizer) > ref.get_input_embeddings().num_embeddings
    match_vocab(ref, tokenizer)
    if resized:  # rows added for a new pad token are random: take the policy's, so the copy is the initial policy
        base = policy.get_base_model()
        with torch.no_grad():
            ref.get_input_embeddings().weight.copy_(base.get_input_embeddings().weight)
            if not ref.config.tie_word_embeddings:
                ref.get_output_embeddings().weight.copy_(base.get_output_embeddings().weight)
    disable_dropout(ref)
    return freeze(ref)


def quantization_config(quantization: str, compute_dtype: torch.dtype) -> Optional[BitsAndBytesConfig]:
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    return None


def build_reward(cfg: RewardConfig, device, dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The reward model with its own tokenizer (right-padded: the classifier pools the last real token)."""
    config = load_config("reward.name", cfg.name)
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ConfigError(
            f"reward.name={cfg.name!r} is not allowed: it is a {archs[0]}, expected a sequence classifier "
            "(AutoModelForSequenceClassification)"
        )
    if config.num_labels != 1:  # a reward is one logit; a classifier's first class would be read silently
        raise ConfigError(f"reward.name={cfg.name!r} is not allowed: it has {config.num_labels} labels, expected a "
                          "reward model with one (num_labels=1)")
    tokenizer = load_tokenizer("reward.name", cfg.name, padding_side="right")
    tokenizer.truncation_side = "left"  # keep the response, which sits at the end of the conversation
    quant = quantization_config(cfg.quantization, dtype)
    kwargs = {"dtype": dtype}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model = AutoModelForSequenceClassification.from_pretrained(os.path.expanduser(cfg.name), **kwargs)
    if quant is None:
        model = model.to(device)
    match_vocab(model, tokenizer)
    disable_dropout(model)
    return freeze(model), tokenizer


def check_positions(cfg: RunConfig) -> None:
    """Prompt and response must fit the policy's positions: a sequence longer than max_position_embeddings would run
    (slowly, on rotary positions it never saw), so it is refused in one line before any weight is loaded."""
    limit = getattr(load_config("model.name", cfg.model.name), "max_position_embeddings", None)
    need = cfg.data.max_prompt_length + cfg.ppo.response_length
    if limit is not None and need > limit:
        raise ConfigError(
            f"ppo.response_length={cfg.ppo.response_length} is not allowed: with data.max_prompt_length="
            f"{cfg.data.max_prompt_length} a sequence reaches {need} positions, and {cfg.model.name} has "
            f"max_position_embeddings={limit} (expected the two to sum to at most {limit})")


def build_models(cfg: RunConfig, device: torch.device) -> Models:
    check_positions(cfg)
    dtype = pick_dtype(cfg.model.dtype, device)
    tokenizer = load_tokenizer("model.name", cfg.model.name, padding_side="left")
    policy = build_policy(cfg.model, cfg.lora, tokenizer, device, dtype)
    value = build_value(cfg.model, cfg.lora, tokenizer, device, dtype) if cfg.algo.critic else None
    reference = build_reference(cfg.model, policy, tokenizer, device, dtype)
    reward, reward_tokenizer = (None, None)
    if cfg.reward.name is not None:
        reward, reward_tokenizer = build_reward(cfg.reward, device, pick_dtype(cfg.reward.dtype, device))
    return Models(
        policy=policy,
        value=value,
        reference=reference,
        reward=reward,
        tokenizer=tokenizer,
        reward_tokenizer=reward_tokenizer,
        stop_ids=stop_token_ids(policy, tokenizer),
    )


def unwrap_peft(model: nn.Module) -> nn.Module:
    return model.get_base_model() if isinstance(model, peft.PeftModel) else model


class TokenValueModel(nn.Module):
    """V(s_t) at every position: the classifier's score head on every hidden state, not just the last."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        clf = unwrap_peft(self.classifier)
        backbone = getattr(clf, clf.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False)
        # the head is trained, so fp32 (trainable_in_fp32); the backbone may be frozen bf16 under a value LoRA
        return clf.score(hidden.last_hidden_state.float()).squeeze(-1)


class PolicyAndValue(nn.Module):
    """The trained models as one module: what DDP or DeepSpeed wraps, under one optimizer.

    A training forward goes through this module (so through the wrapper that syncs gradients) and
    returns the policy's logits at the last `logits_to_keep` positions and V(s_t) at every position
    (None without a critic).
    """

    def __init__(self, policy: nn.Module, value: Optional[TokenValueModel]):
        super().__init__()
        self.policy, self.value = policy, value

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep: int) -> tuple:
        logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             logits_to_keep=logits_to_keep, use_cache=False).logits
        values = None if self.value is None else self.value(input_ids, attention_mask, position_ids)
        return logits, values
