"""TRL 1.12's PPOTrainer (trl.experimental.ppo, removed in trl 1.13) on the setup `mindprint.bench` passes.

Runs in its own venv (.venv-trl: trl==1.12.0); prints one JSON line: {"episodes_per_s": ..., "wall_s": ...,
"gc_s": ..., "peak_rss_gib": ...} (plus "peak_mem_gib" on a GPU). gc_s is the time spent in Python's garbage
collector, which TRL's loop runs in full (gc.collect()) twice an iteration. Settings mirror mindprint's run:
gradient checkpointing as mindprint's config has it, fp32 on a CPU and bf16 on a GPU (TRL's PPOConfig
defaults to bf16 and gradient checkpointing on).
"""

import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
)
from trl.experimental.ppo import PPOConfig, PPOTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this venv has trl, not mindprint
from mindprint.engine.hostmem import peak_rss_gib  # noqa: E402  (standard library only)


def reward_kwargs(s: dict, dtype: torch.dtype) -> dict:
    """Load arguments of the reward model: bitsandbytes-quantized models are placed as they load."""
    place = {"device_map": {"": 0 if s["device"] == "cuda" else s["device"]}}
    if s["reward_quantization"] == "8bit":
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), **place}
    if s["reward_quantization"] == "4bit":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        return {"quantization_config": quant, **place}
    return {"dtype": dtype}


class GcTimer:
    """Seconds spent in garbage collections, explicit or automatic, through gc's public callbacks."""

    def __init__(self) -> None:
        self.seconds, self._start = 0.0, 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start


def main() -> None:
    s = json.loads(sys.argv[1])
    torch.manual_seed(s["seed"])
    dtype = torch.bfloat16 if s["bf16"] else torch.float32
    tok = AutoTokenizer.from_pretrained(s["policy"], padding_side="left")
    prompts = [json.loads(line)["prompt"] for line in open(s["prompts"])]
    if s["chat_template"]:
        prompts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    dataset = Dataset.from_dict({"input_ids": [tok(t, add_special_tokens=False)["input_ids"] for t in prompts]})
    args = PPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=s["trl"]["per_device_train_batch_size"],
        gradient_accumulation_steps=s["trl"]["gradient_accumulation_steps"],
        num_mini_batches=s["trl"]["num_mini_batches"],
        num_ppo_epochs=s["ppo_epochs"],
        local_rollout_forward_batch_size=s["rollout_batch_size"],  # generation and no-grad forwards, as mindprint
        total_episodes=s["steps"] * s["batch_size"],
        response_length=s["response_length"],
        temperature=s["temperature"],
        learning_rate=s["learning_rate"],
        kl_coef=s["kl_coef"],
        stop_token="eos",
        num_sample_generations=0,
        report_to="none",
        use_cpu=s["device"] == "cpu",
        bf16=s["bf16"],
        gradient_checkpointing=s["gradient_checkpointing"],  # TRL checkpoints the policy only
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=s["seed"],
    )
    lora = LoraConfig(r=s["lora_rank"], lora_alpha=s["lora_alpha"], target_modules=s["target_modules"],
                      task_type="CAUSAL_LM")
    trainer = PPOTrainer(
        args=args,
        processing_class=tok,
        model=AutoModelForCausalLM.from_pretrained(s["policy"], dtype=dtype),
        ref_model=None,
        reward_model=AutoModelForSequenceClassification.from_pretrained(s["reward"], num_labels=1,
                                                                        **reward_kwargs(s, dtype)),
        value_model=AutoModelForSequenceClassification.from_pretrained(s["policy"], num_labels=1, dtype=dtype),
        train_dataset=dataset,
        peft_config=lora,
    )
    gc_timer = GcTimer()
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    result = {"episodes_per_s": s["steps"] * s["batch_size"] / wall, "wall_s": wall, "gc_s": gc_timer.seconds,
              "peak_rss_gib": peak_rss_gib()}
    if torch.cuda.is_available():
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(result))


if __name__ == "__main__":
    main()
