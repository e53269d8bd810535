"""How mindprint runs under accelerate's launchers: one process, DDP, or DeepSpeed ZeRO-2/3.

DeepSpeed takes the one module that trains (policy and value together, `PolicyAndValue`) and the one
optimizer over both; the frozen models (the 8-bit reward model, a reference copy) are never handed to it,
so they are loaded whole on every process, and ZeRO-3 does not shard them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs

from mindprint.config import ConfigError, PPOConfig


def make_accelerator(device: torch.device) -> Accelerator:
    """The Accelerator for `device`, whichever launcher started us."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        # cpu=True would quietly turn DeepSpeed off; on CPUs its processes talk over gloo.
        handlers = [InitProcessGroupKwargs(backend="gloo")] if device.type == "cpu" else []
        return Accelerator(kwargs_handlers=handlers)
    return Accelerator(cpu=device.type == "cpu")


def zero_stage(accelerator: Accelerator) -> int:
    """DeepSpeed's ZeRO stage, 0 when DeepSpeed is not in use."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return 0
    return accelerator.state.deepspeed_plugin.zero_stage


def describe(stage: int) -> str:
    """How a run with ZeRO `stage` (0: no DeepSpeed) was launched, for messages."""
    return f"DeepSpeed ZeRO-{stage}" if stage else "DDP or a single process"


def configure_deepspeed(accelerator: Accelerator, p: PPOConfig) -> None:
    """DeepSpeed's batch and clipping settings, from ppo.* (its "auto" values need a dataloader we don't have).

    DeepSpeed takes its optimizer step inside backward; one backward per minibatch is what lets a
    minibatch with a NaN/Inf loss be kept out of the weights (its backward is never run).
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    stage = accelerator.state.deepspeed_plugin.zero_stage
    if stage not in (1, 2, 3):
        raise ConfigError(f"zero_stage={stage} is not allowed: expected 1, 2 or 3 (for no sharding, use DDP: "
                          f"conf/accelerate/ddp.yaml)")
    if accelerator.mixed_precision != "no":
        # DeepSpeed would cast every trained tensor to it, and its bf16 steps do not skip NaN gradients.
        raise ConfigError(f"mixed_precision={accelerator.mixed_precision!r} is not allowed under DeepSpeed: expected "
                          f"'no' (model.dtype=auto already loads the frozen weights in bf16 on GPUs)")
    if p.micro_batch_size != p.mini_batch_size:
        raise ConfigError(
            f"ppo.micro_batch_size={p.micro_batch_size} is not allowed under DeepSpeed: expected "
            f"ppo.mini_batch_size={p.mini_batch_size} (one backward per optimizer step; save memory with "
            f"ZeRO-3 or model.gradient_checkpointing=true instead)"
        )
    if stage == 3 and p.kv_cache == "static":
        raise ConfigError("ppo.kv_cache='static' is not allowed under ZeRO-3: expected 'dynamic' (each rollout gathers "
                          "the sharded weights anew, so a compiled decoding step cannot keep them)")
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = p.micro_batch_size
    ds["gradient_accumulation_steps"] = 1
    ds["train_batch_size"] = p.micro_batch_size * accelerator.num_processes
    ds["gradient_clipping"] = p.max_grad_norm  # DeepSpeed clips the global norm of both models together


@contextlib.contextmanager
def no_zero3_init(accelerator: Accelerator) -> Iterator[None]:
    """Build models whole: under ZeRO-3, accelerate makes transformers shard every model built after it.

    The frozen models must stay whole (an 8-bit model cannot be sharded), and the trained ones are
    sharded by DeepSpeed when prepared, so nothing is lost by loading them whole first.
    """
    if zero_stage(accelerator) != 3:
        yield
        return
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        accelerator.state.deepspeed_plugin.set_deepspeed_weakref()


def gathered(accelerator: Accelerator, params: list[torch.nn.Parameter], modifier_rank=None):
    """Under ZeRO-3, `params` whole inside the block (changes by `modifier_rank` are kept); else nothing to do."""
    if zero_stage(accelerator) != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def for_generation(accelerator: Accelerator, engine) -> contextlib.AbstractContextManager:
    """Under ZeRO-3, gather the weights once for all decoding steps (instead of at every step's forward)."""
    if zero_stage(accelerator) != 3:
        return contextlib.nullcontext()
    from deepspeed.runtime.zero import unwrap_model_for_generation

    return unwrap_model_for_generation(engine)


def sum_all(accelerator: Accelerator, x: torch.Tensor) -> torch.Tensor:
    """`x` summed over all processes (itself on one)."""
    return accelerator.reduce(x, "sum")


def everywhere(accelerator: Accelerator, ok: bool) -> bool:
    """True only if `ok` holds on every process, so all of them skip (or take) a step together."""
    flags = accelerator.reduce(torch.tensor([0.0 if ok else 1.0], device=accelerator.device), "sum")
    return flags.item() == 0
