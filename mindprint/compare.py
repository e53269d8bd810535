"""`python -m mindprint.compare PATH [PATH ...]`: a Markdown report and plots comparing finished runs.

PATH is a sweep directory (its job directories are the runs) or run directories. The report
(`report.md`) and the PNG plots go into the sweep directory, or into --out (default: the runs'
common parent). Reads only what runs write locally (metrics.jsonl, summary.json), so W&B is optional.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402

from mindprint.sweep import FAILED  # noqa: E402
from mindprint.tracking import read_metrics  # noqa: E402


@dataclass
class Run:
    path: Path
    name: str
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    failure: Optional[str] = None

    @property
    def rank(self) -> Optional[int]:
        return self.summary.get("lora/rank")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        rows = [m for m in self.metrics if m.get(key) is not None]
        return [m["iteration"] for m in rows], [m[key] for m in rows]

    def last(self, key: str) -> Optional[float]:
        values = self.series(key)[1]
        return values[-1] if values else None

    def tail_mean(self, key: str) -> Optional[float]:
        """Mean over the last fifth of iterations: a final value that one noisy batch does not decide."""
        values = self.series(key)[1]
        if not values:
            return None
        tail = values[-max(1, len(values) // 5) :]
        return sum(tail) / len(tail)


def _name(path: Path) -> str:
    overrides = path / ".hydra" / "overrides.yaml"
    if overrides.exists():
        import yaml

        items = [o for o in yaml.safe_load(overrides.read_text()) or [] if not o.startswith(("+experiment", "logger"))]
        if items:
            return ",".join(items)
    return path.name


def load_run(path: Path) -> Run:
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else {}
    run = Run(path=path, name=summary.get("name") or _name(path), summary=summary)
    if (path / FAILED).exists():
        run.failure = (path / FAILED).read_text().strip()
    if (path / "metrics.jsonl").exists():
        run.metrics = read_metrics(path / "metrics.jsonl")
    elif run.failure is None:
        run.failure = "no metrics.jsonl"
    return run


def discover(paths: list[Path]) -> list[Run]:
    runs = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"PATH={str(path)!r} is not allowed: expected a sweep or run directory")
        if (path / "metrics.jsonl").exists() or (path / FAILED).exists():
            runs.append(load_run(path))
            continue
        jobs = sorted(p for p in path.iterdir() if p.is_dir() and ((p / ".hydra").exists() or (p / "metrics.jsonl").exists()))
        if not jobs:
            raise FileNotFoundError(f"PATH={str(path)!r} is not allowed: it holds no run (no metrics.jsonl found)")
        runs += [load_run(p) for p in jobs]
    return runs


def label(run: Run, runs: list[Run]) -> str:
    ranks = {r.rank for r in runs}
    return f"r={run.rank}" if run.rank is not None and len(ranks) == len(runs) else run.name


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(runs: list[Run]) -> str:
    head = ("| run | LoRA rank | LoRA params | final reward | best reward | final KL | mean clipfrac | "
            "held-out reward | wall time (s) |")
    lines = [head, "|---|" + "---:|" * 8]
    for r in runs:
        if r.failure and not r.metrics:
            lines.append(f"| {r.name} | failed: {r.failure} | | | | | | | |")
            continue
        scores = r.series("objective/scores")[1]
        clip = r.series("policy/clipfrac_avg")[1]
        lines.append(
            f"| {r.name} | {_fmt(r.rank, 'd')} | {_fmt(r.summary.get('lora/trainable_params'), ',d')} | "
            f"{_fmt(r.tail_mean('objective/scores'), '.3f')} | {_fmt(max(scores) if scores else None, '.3f')} | "
            f"{_fmt(r.tail_mean('objective/kl'), '.2f')} | {_fmt(sum(clip) / len(clip) if clip else None, '.3f')} | "
            f"{_fmt(r.last('eval/scores'), '.3f')} | {_fmt(r.summary.get('wall_s'), '.1f')} |"
        )
    return "\n".join(lines)


PLOTS = {"reward": "objective/scores", "kl": "objective/kl", "clipfrac": "policy/clipfrac_avg"}


def plot(runs: list[Run], out: Path) -> list[Path]:
    done = [r for r in runs if r.metrics]
    files = []
    for stem, key in PLOTS.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in done:
            ax.plot(*r.series(key), label=label(r, done))
        ax.set_xlabel("PPO iteration")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(out / f"{stem}.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in done:
        x, y = r.tail_mean("objective/kl"), r.tail_mean("objective/scores")
        ax.scatter([x], [y])
        ax.annotate(label(r, done), (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("final KL to the reference (objective/kl)")
    ax.set_ylabel("final reward (objective/scores)")
    ax.set_title("reward against KL, one point per run")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.append(out / "reward_vs_kl.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files


def report(runs: list[Run], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    files = plot(runs, out)
    failed = [r for r in runs if r.failure]
    text = [
        f"# mindprint comparison: {len(runs)} runs" + (f", {len(failed)} failed" if failed else ""),
        "",
        "Final values are means over each run's last fifth of iterations.",
        "",
        table(runs),
        "",
        *[f"![{f.stem}]({f.name})" for f in files],
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(text))
    return path


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mindprint.compare", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep directory, or run directories")
    parser.add_argument("--out", type=Path, default=None, help="where report.md and the plots go")
    args = parser.parse_args(argv)
    try:
        runs = discover(args.paths)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sweep = len(args.paths) == 1 and runs[0].path != args.paths[0]
    out = args.out or (args.paths[0] if sweep else Path(os.path.commonpath([r.path.parent for r in runs])))
    path = report(runs, out)
    print(path.read_text().split("\n![")[0])
    print(f"report: {path}")


if __name__ == "__main__":
    main()
