"""What a run prints: the model table of a dry run, and the summary that closes a training run."""

from __future__ import annotations

import math
from collections import Counter

from peft.tuners.lora import LoraLayer
from rich.console import Console
from rich.table import Table
from torch import nn

from mindprint.engine.models import Models, unwrap_peft


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameters; shared (tied) tensors counted once."""
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def lora_formula(model: nn.Module) -> tuple[int, int]:
    """(r, Σ over adapted Linear layers of in_features + out_features): LoRA size = r × Σ."""
    ranks, span = set(), 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, r in module.r.items():
                ranks.add(r)
                span += module.in_features + module.out_features
    return (ranks.pop() if len(ranks) == 1 else 0), span


def dtypes(model: nn.Module) -> str:
    counts = Counter(str(p.dtype).removeprefix("torch.") for p in model.parameters())
    return " + ".join(d for d, _ in counts.most_common())


def quantization(model: nn.Module) -> str:
    kinds = Counter(type(m).__name__ for m in model.modules() if type(m).__module__.startswith("bitsandbytes"))
    return ", ".join(f"{n} × {k}" for k, n in kinds.items()) if kinds else "none"


def device_of(model: nn.Module) -> str:
    return str(next(model.parameters()).device)


def model_rows(models: Models, names: dict[str, str]) -> list[dict[str, str]]:
    policy_all, policy_train = count_parameters(models.policy)
    rows = [dict(role="policy", name=names["model"], params=policy_all, trainable=policy_train, model=models.policy)]
    value_all, value_train = count_parameters(models.value) if models.value is not None else (0, 0)
    rows.append(dict(role="value", name=names["value"], params=value_all, trainable=value_train, model=models.value))
    if models.reference is None:
        base_all = policy_all - policy_train
        rows.append(dict(role="reference", name="policy, adapter disabled (shared)", params=base_all, trainable=0,
                         model=models.policy))
    else:
        ref_all, _ = count_parameters(models.reference)
        rows.append(dict(role="reference", name=names["model"] + " (frozen copy)", params=ref_all, trainable=0,
                         model=models.reference))
    if models.reward is not None:
        rm_all, rm_train = count_parameters(models.reward)
        rows.append(dict(role="reward", name=names["reward"], params=rm_all, trainable=rm_train, model=models.reward))
    else:
        rows.append(dict(role="reward", name=names["reward"], params=0, trainable=0, model=None))
    return rows


def wide_console() -> Console:
    """Tables stay whole in logs and pipes, where rich would otherwise assume 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_models(models: Models, names: dict[str, str], console: Console | None = None) -> None:
    console = console or wide_console()
    table = Table(title="mindprint: models")
    for col in ("role", "model", "parameters", "trainable", "dtype", "quantization", "device"):
        table.add_column(col, justify="right" if col in ("parameters", "trainable") else "left")
    for row in model_rows(models, names):
        m = row["model"]
        table.add_row(
            row["role"], row["name"], f"{row['params']:,}", f"{row['trainable']:,}",
            dtypes(m) if m is not None else "-", quantization(m) if m is not None else "-",
            device_of(m) if m is not None else "-",
        )
    console.print(table)
    r, span = lora_formula(models.policy)
    console.print(f"policy LoRA: r × Σ(in_features + out_features) = {r} × {span:,} = {r * span:,} parameters")
    if models.value is not None:
        console.print(f"value head: fresh {tuple(unwrap_peft(models.value).score.weight.shape)} Linear")
    else:
        console.print("value model: none, the algorithm is critic-free (not built, trained or checkpointed)")
    console.print(f"stop ids {models.stop_ids}")


def _mean(history: list[dict], key: str) -> float:
    vals = [h[key] for h in history if h.get(key) is not None]
    return sum(vals) / len(vals) if vals else float("nan")


SUMMARY_KEYS = ("objective/scores", "objective/kl", "objective/kl_coef", "policy/clipfrac_avg", "val/clipfrac_avg",
                "loss/policy_avg", "loss/value_avg", "env/response_length")


def summarise(history: list[dict], wall_s: float, episodes: int) -> dict[str, float]:
    """First- and last-fifth means of the headline metrics, plus throughput (`episodes` in `wall_s`) and phase shares."""
    k = max(1, len(history) // 5)
    out = {}
    for key in SUMMARY_KEYS:
        out[f"{key}/first"] = _mean(history[:k], key)
        out[f"{key}/last"] = _mean(history[-k:], key)
    out["wall_s"] = wall_s
    out["episodes"] = episodes
    out["eps"] = episodes / wall_s if wall_s > 0 else 0.0
    phases = {p: sum(h.get(f"time/{p}_s", 0.0) for h in history) for p in ("generate", "reference", "value", "reward",
                                                                            "update")}
    total = sum(phases.values()) or 1.0
    out.update({f"share/{p}": t / total for p, t in phases.items()})
    peaks = [h["perf/peak_mem_gib"] for h in history if "perf/peak_mem_gib" in h]
    if peaks:
        out["peak_mem_gib"] = max(peaks)
    if history and "eval/scores" in history[-1]:
        out["eval/scores"] = history[-1]["eval/scores"]
        out["eval/kl"] = history[-1]["eval/kl"]
    return out


def print_summary(summary: dict[str, float], console: Console | None = None) -> None:
    console = console or wide_console()
    critic = "" if summary.get("critic", True) else ", critic-free: no value model"
    table = Table(title=f"run summary ({summary.get('algo', 'ppo')}{critic}): first vs last fifth of iterations")
    table.add_column("metric")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    for key in SUMMARY_KEYS:
        if math.isfinite(summary[key + "/first"]):  # a critic-free run has no value loss or value clipfrac
            table.add_row(key, f"{summary[key + '/first']:.4f}", f"{summary[key + '/last']:.4f}")
    console.print(table)
    shares = ", ".join(f"{p} {summary[f'share/{p}']:.0%}" for p in ("generate", "reference", "value", "reward",
                                                                     "update"))
    line = f"{summary['episodes']} episodes in {summary['wall_s']:.1f} s = {summary['eps']:.2f} episodes/s; time: {shares}"
    if "peak_mem_gib" in summary:
        line += f"; peak GPU memory {summary['peak_mem_gib']:.1f} GiB"
    if "peak_rss_gib" in summary:
        line += f"; peak host memory {summary['peak_rss_gib']:.2f} GiB"
    console.print(line)
    if "eval/scores" in summary:
        console.print(f"held-out: score {summary['eval/scores']:.4f}, KL {summary['eval/kl']:.4f}")
