"""TRL 1.12's PPOTrainer (trl.experimental.ppo, removed in trl 1.13) on the setup `mindprint.bench` passes.

Runs in its own venv (.venv-trl: trl==1.12.0); prints one JSON line: {"episodes_per_s": ..., "wall_s": ...}.
Settings mirror mindprint's: fp32, no gradient checkpointing (TRL's PPOConfig defaults both differently).
"""

import json
import sys
import tempfile
import time

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl.experimental.ppo import PPOConfig, PPOTrainer


def main() -> None:
    s = json.loads(sys.argv[1])
    torch.manual_seed(s["seed"])
    tok = AutoTokenizer.from_pretrained(s["policy"], padding_side="left")
    prompts = [json.loads(line)["prompt"] for line in open(s["prompts"])]
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    dataset = Dataset.from_dict({"input_ids": [tok(t, add_special_tokens=False)["input_ids"] for t in texts]})
    args = PPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=s["micro_batch_size"],
        gradient_accumulation_steps=s["batch_size"] // s["micro_batch_size"],
        num_mini_batches=s["batch_size"] // s["mini_batch_size"],
        num_ppo_epochs=s["ppo_epochs"],
        total_episodes=s["steps"] * s["batch_size"],
        response_length=s["response_length"],
        temperature=s["temperature"],
        learning_rate=s["learning_rate"],
        kl_coef=s["kl_coef"],
        stop_token="eos",
        num_sample_generations=0,
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
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
        model=AutoModelForCausalLM.from_pretrained(s["policy"]),
        ref_model=None,
        reward_model=AutoModelForSequenceClassification.from_pretrained(s["reward"], num_labels=1),
        value_model=AutoModelForSequenceClassification.from_pretrained(s["policy"], num_labels=1),
        train_dataset=dataset,
        peft_config=lora,
    )
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    print(json.dumps({"episodes_per_s": s["steps"] * s["batch_size"] / wall, "wall_s": wall}))


if __name__ == "__main__":
    main()
