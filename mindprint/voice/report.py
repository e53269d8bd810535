"""The pipeline's report: report.json (the numbers of every finished stage, under stable keys) and report.md (a
table per stage and the held-out samples side by side)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from mindprint.config import VoiceRunConfig
from mindprint.voice.evaluate import MODELS, SAMPLE_ROWS
from mindprint.voice.prepare import Example


def assemble(stages: dict[str, Optional[dict]], heldout: list[Example], eval_dir: Path) -> dict:
    """report.json's content from the stages' stage.json files (a stage not finished adds nothing)."""
    out: dict = {"seconds": {s: r["seconds"] for s, r in stages.items() if r}}
    if prep := stages["prepare"]:
        out.update({k: prep[k] for k in ("documents", "passages", "topics", "skipped_files", "short_passages")})
        out["author_floor"] = {"style_delta": prep["author_floor"]}
    if sft := stages["sft"]:
        out["sft"] = {"heldout_perplexity": sft["heldout_perplexity"]}
    if rm := stages["reward"]:
        out["reward_model"] = {"heldout_accuracy": rm["heldout_accuracy"], "heldout_margin": rm["heldout_margin"],
                               "heldout_pairs": rm["pairs"]}
    if ev := stages["evaluate"]:
        out["models"] = ev["models"]
        out["author"] = ev["author"]
        out["eval_prompts"] = ev["prompts"]
    return out


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.1f}"


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown(data: dict, cfg: VoiceRunConfig, samples: list[dict]) -> str:
    lines = [f"# Voice pipeline: {cfg.texts}", "", f"policy base `{cfg.model.name}`, algorithm `{cfg.algo.name}`, "
             f"LoRA rank {cfg.lora.rank}, seed {cfg.seed}", ""]
    if "documents" in data:
        d, p = data["documents"], data["passages"]
        lines += ["## Data", "", "| | documents | passages |", "|---|---|---|",
                  f"| train | {d['train']} | {p['train']} |", f"| held out | {d['heldout']} | {p['heldout']} |", "",
                  f"topics: {', '.join(data['topics'])}; passages dropped as too short: {data['short_passages']}; "
                  f"files skipped (not UTF-8): {len(data['skipped_files'])}", ""]
    if "sft" in data:
        ppl = data["sft"]["heldout_perplexity"]
        lines += ["## SFT", "", "| held-out perplexity | base | SFT |", "|---|---|---|",
                  f"| completion tokens | {_num(ppl['base'])} | {_num(ppl['sft'])} |", ""]
    if "reward_model" in data:
        rm = data["reward_model"]
        lines += ["## Reward model", "", "| held-out pairs | accuracy | mean margin |", "|---|---|---|",
                  f"| {rm['heldout_pairs']} | {_num(rm['heldout_accuracy'])} | {_num(rm['heldout_margin'])} |", ""]
    if "models" in data:
        m = data["models"]
        extra = [k for k in m["base"] if k not in ("reward", "style_delta", "response_tokens", "kl")]
        header = ["model", "reward (voice RM) ↑", "style distance (Delta) ↓", "KL to its start (nats)",
                  "response tokens", *extra]
        lines += [f"## Held-out prompts ({data['eval_prompts']})", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for name in MODELS:
            row = m[name]
            cells = [name, _num(row["reward"]), _num(row["style_delta"]), _num(row["kl"]) if "kl" in row else "—",
                     f"{row['response_tokens']:.1f}", *(_num(row[k]) for k in extra)]
            lines.append("| " + " | ".join(cells) + " |")
        floor = data["author_floor"]["style_delta"]
        cells = ["author (held-out text)", _num(data["author"]["reward"]),
                 f"{_num(floor)} (floor: vs their training text)", "—", "—", *(_num(data["author"][k]) for k in extra)]
        lines += ["| " + " | ".join(cells) + " |", ""]
    if samples:
        lines += ["## Samples", "", "| prompt | author | base | SFT | PPO |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(_cell(s[k]) for k in ("prompt", "author", *MODELS)) + " |" for s in samples]
        lines.append("")
    if data["seconds"]:
        lines += ["## Seconds per stage", "", "| " + " | ".join(data["seconds"]) + " |",
                  "|" + "---|" * len(data["seconds"]),
                  "| " + " | ".join(f"{s:.0f}" for s in data["seconds"].values()) + " |", ""]
    return "\n".join(lines)


def write(root: Path, data: dict, cfg: VoiceRunConfig) -> None:
    generations = root / "eval" / "generations.jsonl"
    samples = [json.loads(line) for line in generations.read_text(encoding="utf-8").splitlines()[:SAMPLE_ROWS]] \
        if "models" in data else []
    for name, text in (("report.json", json.dumps(data, indent=1)), ("report.md", markdown(data, cfg, samples))):
        tmp = root / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, root / name)
