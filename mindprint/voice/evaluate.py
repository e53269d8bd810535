"""The evaluate stage: the base, SFT and PPO models write on the held-out prompts under the same sampling settings
and seed, and each set of generations is measured three ways:

    reward      the voice reward model's mean score (what PPO optimised: it can be fooled)
    style_delta Burrows' Delta to the author's held-out text (mindprint.analysis.style): independent of the reward
                model, so a voice learned shows here too and a reward model gamed does not
    kl          (SFT, PPO) Σ_t KL(π ‖ π_ref) per response to the model it started from (base, SFT), in nats
and by every extra judge of eval.scorers. The author's own held-out completions are scored by the reward model too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedTokenizerBase

from mindprint.analysis.style import StyleTarget
from mindprint.config import LoggerConfig, RunConfig
from mindprint.engine.models import load_tokenizer, match_vocab
from mindprint.engine.rewards import RewardModelScorer, build_judges
from mindprint.voice.prepare import Example
from mindprint.voice.sampling import decode, sample, sequence_kl

MODELS = ("base", "sft", "ppo")
SAMPLE_ROWS = 5  # rows of the samples table in the report and in W&B


def load_models(paths: dict[str, str], tokenizer: PreTrainedTokenizerBase, device: torch.device
                ) -> dict[str, torch.nn.Module]:
    """base and sft from their directories; ppo = the SFT model with the PPO stage's adapter merged in."""
    def load(path: str) -> torch.nn.Module:
        model = AutoModelForCausalLM.from_pretrained(os.path.expanduser(path)).to(device).eval()
        match_vocab(model, tokenizer)  # a pad id that load_tokenizer added (the SFT model has its row already)
        return model

    models = {"base": load(paths["base"]), "sft": load(paths["sft"])}
    models["ppo"] = PeftModel.from_pretrained(load(paths["sft"]), paths["ppo"]).merge_and_unload().eval()
    return models


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def evaluate(cfg: RunConfig, paths: dict[str, str], heldout: list[Example], style_path: Path, reward_path: str,
             tokenizer: PreTrainedTokenizerBase, device: torch.device, out: Path) -> dict:
    p = cfg.ppo
    prompts = [e.prompt for e in heldout]
    models = load_models(paths, tokenizer, device)
    ids = {name: sample(models[name], tokenizer, prompts, p.response_length, p.temperature, p.rollout_batch_size,
                        cfg.seed) for name in MODELS}
    texts = {name: decode(tokenizer, ids[name]) for name in MODELS}
    kl = {"sft": sequence_kl(models["sft"], models["base"], tokenizer, prompts, ids["sft"], p.temperature,
                             p.rollout_batch_size),
          "ppo": sequence_kl(models["ppo"], models["sft"], tokenizer, prompts, ids["ppo"], p.temperature,
                             p.rollout_batch_size)}
    del models
    rm_tokenizer = load_tokenizer("reward.path", reward_path, padding_side="right")
    rm = AutoModelForSequenceClassification.from_pretrained(reward_path, num_labels=1).to(device).eval()
    score = RewardModelScorer(rm, rm_tokenizer, cfg.reward.batch_size, cfg.reward.max_length)
    judges = build_judges(cfg.eval, device)
    target = StyleTarget.load(style_path)
    results: dict = {"prompts": len(prompts), "models": {}}
    for name in MODELS:
        row = {"reward": score(prompts, texts[name]).mean().item(), "style_delta": target.distance(texts[name]),
               "response_tokens": mean([len(r) for r in ids[name]])}
        if name in kl:
            row["kl"] = mean(kl[name])
        row.update({judge: fn(prompts, texts[name]).mean().item() for judge, fn in judges.items()})
        results["models"][name] = row
    author = [e.completion for e in heldout]
    results["author"] = {"reward": score(prompts, author).mean().item(),
                         **{judge: fn(prompts, author).mean().item() for judge, fn in judges.items()}}
    rows = [{"prompt": e.prompt, "author": e.completion, **{name: texts[name][i] for name in MODELS},
             "topic": e.topic, "document": e.document} for i, e in enumerate(heldout)]
    (out / "generations.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                           encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def log_to_wandb(cfg: LoggerConfig, group: str, out: Path, results: dict) -> None:
    """The stage's numbers and the samples table as a W&B run of job type eval in the pipeline's group."""
    import wandb

    from mindprint.engine.tracking import wandb_mode

    mode, _ = wandb_mode(cfg.mode, out)  # the earlier stages have said it once if W&B is out of reach
    run = wandb.init(project=cfg.project, entity=cfg.entity, group=group, job_type="eval", name=f"{group}/eval",
                     tags=list(cfg.tags), mode=mode, dir=str(out))
    metrics = {f"eval/{model}/{key}": value for model, row in results["models"].items() for key, value in row.items()}
    metrics.update({f"eval/author/{key}": value for key, value in results["author"].items()})
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    columns = ["prompt", "author", *MODELS]
    metrics["samples"] = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows[:SAMPLE_ROWS]])
    run.log(metrics)
    run.finish()
