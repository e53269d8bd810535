"""The SFT stage: the policy's base model fine-tuned on the author's prompt/completion examples with TRL's SFTTrainer
through a LoRA, which is then merged into a standalone model directory (the policy and reference PPO starts from).

Framing: the prompt and completion are raw text, as in `prepare` (no chat template), and TRL's prompt-completion
path tokenizes them apart, joins them and appends EOS; the loss covers the completion tokens only
(`completion_only_loss`, TRL's default for such data, set here explicitly). `perplexity` reads held-out examples in
the same framing, so base → SFT perplexities compare like with like.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import datasets
import peft
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from mindprint.config import SFTConfig
from mindprint.engine.models import lora_targets_error
from mindprint.voice.prepare import Example


def as_dataset(examples: Sequence[Example]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"prompt": [e.prompt for e in examples],
                                       "completion": [e.completion for e in examples]})


def trainer_for(model_name: str, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], settings: SFTConfig,
                work_dir: Path, seed: int, device: torch.device, report_to: str = "none") -> SFTTrainer:
    """TRL's SFTTrainer on the examples, the base model wrapped in a fresh LoRA."""
    model = AutoModelForCausalLM.from_pretrained(os.path.expanduser(model_name))
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    lora = peft.LoraConfig(task_type="CAUSAL_LM", r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                           target_modules=list(settings.lora_targets), lora_dropout=0.0)
    args = TRLSFTConfig(
        output_dir=str(work_dir), completion_only_loss=True, max_length=settings.max_length,
        num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, logging_steps=10, save_strategy="no", report_to=report_to,
        use_cpu=device.type == "cpu", bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(), seed=seed,
        disable_tqdm=True,
    )
    try:
        trainer = SFTTrainer(model=model, args=args, train_dataset=as_dataset(examples), processing_class=tokenizer,
                             peft_config=lora)
        trainer.remove_callback(PrinterCallback)  # its dict per log step is not ours to print; W&B still gets them
        return trainer
    except ValueError as err:
        if "Target modules" in str(err):  # peft's words for a target the model lacks
            raise lora_targets_error("voice.sft.lora_targets", settings.lora_targets, model) from None
        raise


def train_sft(model_name: str, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], settings: SFTConfig,
              out_dir: Path, seed: int, device: torch.device, report_to: str = "none") -> Path:
    """Train, merge the LoRA, save model and tokenizer to `out_dir` (written aside and renamed: whole or absent).
    An existing `out_dir` is a finished stage: ValueError, never written over."""
    if out_dir.exists():
        raise ValueError(f"{out_dir} exists: an SFT model is never written over")
    torch.manual_seed(seed)
    trainer = trainer_for(model_name, tokenizer, examples, settings, out_dir.parent / f".{out_dir.name}.trainer", seed,
                          device, report_to)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if losses:
        print(f"SFT: {trainer.state.global_step} steps, training loss {losses[0]:.3f} → {losses[-1]:.3f}")
    merged = trainer.model.merge_and_unload()
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir.parent / f".{out_dir.name}.trainer", ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


@torch.no_grad()
def perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
               max_length: Optional[int] = None) -> float:
    """exp(mean negative log-likelihood of the completion tokens, EOS included, given their prompts), over every
    completion token of `examples` (token-weighted), in SFT's framing."""
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for e in examples:
        prompt = tokenizer(e.prompt, add_special_tokens=False)["input_ids"]
        completion = tokenizer(e.completion + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = (prompt + completion)[: max_length or None]
        n_completion = len(ids) - len(prompt)
        if n_completion <= 0:
            continue
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, :-1].float()
        targets = torch.tensor(ids[1:], device=device)
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")[-n_completion:]
        total += nll.sum().item()
        tokens += n_completion
    return math.exp(total / tokens) if tokens else float("nan")
