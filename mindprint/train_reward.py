"""`python -m mindprint.train_reward [overrides]`: train a reward model on preference pairs with TRL.

Pairs are shown to the model as conversations (user = prompt, assistant = response) through its chat
template: the exact format `RewardModelScorer` gives it during PPO. Writes RUN_DIR/model (classifier +
tokenizer, LoRA merged) and RUN_DIR/eval.json (held-out pairwise accuracy and mean margin).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import datasets
import hydra
import peft
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForSequenceClassification
from transformers.trainer_callback import PrinterCallback
from trl import RewardConfig as TRLRewardConfig
from trl import RewardTrainer

from mindprint.cli import cli, one_line_errors, register, run_directory
from mindprint.config import ConfigError, PairsConfig, TrainRewardConfig
from mindprint.console import hide_progress_bars
from mindprint.engine.data import load_table
from mindprint.engine.models import load_tokenizer, pick_device
from mindprint.engine.rewards import RewardModelScorer
from mindprint.engine.tracking import wandb_mode

register()
COLUMNS = ("chosen", "rejected")


def load_pairs(cfg: PairsConfig, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    ds = load_table("pairs.name", cfg.name, cfg.split)
    local = os.path.exists(os.path.expanduser(cfg.name))
    if cfg.eval_name is not None:
        held_out = load_table("pairs.eval_name", cfg.eval_name, cfg.eval_split or "train")
    else:
        held_out = load_table("pairs.name", cfg.name, cfg.eval_split) if cfg.eval_split and not local else None
    for key, name, table in (("pairs.name", cfg.name, ds), ("pairs.eval_name", cfg.eval_name, held_out)):
        for column in COLUMNS if table is not None else ():
            if column not in table.column_names:
                raise ConfigError(
                    f"{key}={name!r} is not allowed: it has no {column!r} column "
                    f"(columns: {', '.join(table.column_names)}; expected prompt, chosen, rejected)"
                )
    if held_out is None:
        if len(ds) <= cfg.eval_size:
            raise ConfigError(f"pairs.eval_size={cfg.eval_size} is not allowed: expected fewer than the {len(ds)} pairs")
        split = ds.train_test_split(test_size=cfg.eval_size, seed=seed)
        ds, held_out = split["train"], split["test"]
    return as_conversations(ds), as_conversations(held_out)


def as_conversations(ds: datasets.Dataset) -> datasets.Dataset:
    """prompt/chosen/rejected strings → TRL's conversational form, so the chat template frames them."""
    if "prompt" not in ds.column_names or not isinstance(ds[0]["chosen"], str):
        return ds
    return ds.map(
        lambda ex: {
            "prompt": [{"role": "user", "content": ex["prompt"]}],
            "chosen": [{"role": "assistant", "content": ex["chosen"]}],
            "rejected": [{"role": "assistant", "content": ex["rejected"]}],
        }
    )


def pairwise_eval(model, tokenizer, pairs: datasets.Dataset, max_length: int) -> dict[str, float]:
    """Accuracy and mean margin of score(chosen) − score(rejected), scored as PPO will score."""
    scorer = RewardModelScorer(model, tokenizer, batch_size=16, max_length=max_length)
    prompts = [ex["prompt"][-1]["content"] if "prompt" in ex else "" for ex in pairs]
    chosen = [ex["chosen"][-1]["content"] for ex in pairs]
    rejected = [ex["rejected"][-1]["content"] for ex in pairs]
    margin = scorer(prompts, chosen) - scorer(prompts, rejected)
    return {"accuracy": (margin > 0).float().mean().item(), "margin": margin.mean().item(), "pairs": len(pairs)}


def train_reward(cfg: TrainRewardConfig, run_dir: Path) -> dict[str, float]:
    device = pick_device(cfg.device)
    train, held_out = load_pairs(cfg.pairs, cfg.seed)
    tokenizer = load_tokenizer("model.name", cfg.model.name, padding_side="right")
    torch.manual_seed(cfg.seed)
    model = AutoModelForSequenceClassification.from_pretrained(os.path.expanduser(cfg.model.name), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    lora = None
    if cfg.training.lora_rank > 0:
        lora = peft.LoraConfig(task_type="SEQ_CLS", r=cfg.training.lora_rank, lora_alpha=2 * cfg.training.lora_rank,
                               target_modules="all-linear")
    args = TRLRewardConfig(
        output_dir=str(run_dir / "trainer"),
        num_train_epochs=cfg.training.epochs,
        per_device_train_batch_size=cfg.training.batch_size,
        learning_rate=cfg.training.learning_rate,
        max_length=cfg.training.max_length,
        center_rewards_coefficient=cfg.training.center_rewards_coefficient,
        logging_steps=10,
        save_strategy="no",
        report_to=["wandb"] if cfg.logger.backend == "wandb" else "none",
        run_name=cfg.logger.name,
        use_cpu=device.type == "cpu",
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
        seed=cfg.seed,
        disable_tqdm=True,
    )
    if cfg.logger.backend == "wandb":  # TRL's W&B callback reads the environment
        os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
        os.environ.setdefault("WANDB_DIR", str(run_dir))
        mode, warning = wandb_mode(cfg.logger.mode, run_dir)
        if warning:
            print(warning, file=sys.stderr)
        if mode:
            os.environ["WANDB_MODE"] = mode
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, peft_config=lora)
    trainer.remove_callback(PrinterCallback)  # its dict per log step is not ours to print; W&B still gets them
    trainer.train()
    trained = trainer.model.merge_and_unload() if isinstance(trainer.model, peft.PeftModel) else trainer.model
    trained.eval()
    result = pairwise_eval(trained, tokenizer, held_out, cfg.training.max_length)
    tmp = run_dir / ".model.tmp"  # written aside and renamed: a model directory is whole or absent
    shutil.rmtree(tmp, ignore_errors=True)
    trained.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, run_dir / "model")
    (run_dir / "eval.json").write_text(json.dumps(result, indent=1))
    print(f"held-out pairwise accuracy {result['accuracy']:.3f}, mean margin {result['margin']:.3f} "
          f"({result['pairs']} pairs); reward model: {run_dir / 'model'}")
    return result


@hydra.main(config_path="conf", config_name="train_reward", version_base="1.3")
def hydra_main(cfg: DictConfig) -> dict:
    hide_progress_bars()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with one_line_errors(run_dir), run_directory(run_dir, cfg):
        if (run_dir / "model").exists() or (run_dir / "eval.json").exists():
            raise ConfigError(f"hydra.run.dir={str(run_dir)!r} is not allowed: it already holds a reward model "
                              "(model/, eval.json); choose another directory")
        return train_reward(OmegaConf.to_object(cfg), run_dir)


def main() -> None:
    cli(hydra_main)


if __name__ == "__main__":
    main()
