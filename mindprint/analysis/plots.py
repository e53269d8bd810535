"""The comparison's plots: each group's mean curve with its confidence band against the budget axis, and
reward against KL with the frontier marked."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mindprint.analysis import stats  # noqa: E402
from mindprint.analysis.groups import Group  # noqa: E402

CURVES = {"reward": "objective/scores", "kl": "objective/kl", "clipfrac": "policy/clipfrac_avg"}
X_LABELS = {"episodes": "episodes", "tokens": "generated tokens", "seconds": "wall-clock seconds"}


def _short(label: str, limit: int = 38) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def group_curve(group: Group, key: str, x: str, method: str) -> tuple[np.ndarray, list[stats.Interval]]:
    """(grid, interval at each grid point) of `key` against axis `x` over a group's runs. Runs that share their
    positions (equal batch sizes on the episode axis) are read as they are; else each is interpolated linearly
    onto a grid over the span all of them cover."""
    rows = []
    for run in group.runs:
        pairs = [(p, m[key]) for p, m in zip(stats.axis(run.history, x), run.history)
                 if p is not None and m.get(key) is not None]
        if pairs:
            rows.append(np.array(pairs, dtype=np.float64))
    if not rows:
        return np.array([]), []
    if all(len(r) == len(rows[0]) and np.allclose(r[:, 0], rows[0][:, 0]) for r in rows):
        grid, ys = rows[0][:, 0], [r[:, 1] for r in rows]
    else:
        lo, hi = max(r[0, 0] for r in rows), min(r[-1, 0] for r in rows)
        grid = np.linspace(lo, hi, max(len(r) for r in rows)) if hi > lo else np.array([lo])
        ys = [np.interp(grid, r[:, 0], r[:, 1]) for r in rows]
    stack = np.stack(ys)
    return grid, [stats.mean_ci(list(stack[:, i]), method) for i in range(len(grid))]


def plot(groups: list[Group], x: str, budget: float, method: str, out: Path) -> list[Path]:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    files = []
    band = "95% CI of the mean" if any(g.n > 1 for g in groups) else "one run per group"
    # held-out curves the runs logged: eval/scores, and eval/style_delta and eval.scorers' judges where present, so a
    # reward that rises while an independent measure does not shows beside it
    held_out = sorted({k for g in groups for r in g.runs for m in r.history for k in m
                       if k.startswith("eval/") and k != "eval/kl"})
    for stem, key in {**CURVES, **{k.replace("/", "_"): k for k in held_out}}.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for i, g in enumerate(groups):
            grid, ivs = group_curve(g, key, x, method)
            if not len(grid):
                continue
            color = colors[i % len(colors)]
            ax.plot(grid, [iv.mean for iv in ivs], color=color, label=f"{_short(g.label)} (n={g.n})")
            if g.n > 1:
                ax.fill_between(grid, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color=color, alpha=0.2,
                                linewidth=0)
        ax.set_xlabel(X_LABELS[x])
        ax.set_ylabel(key)
        ax.set_xlim(right=budget)
        ax.set_title(f"{key}: mean over seeds, band = {band}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(out / f"{stem}.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    front, labels = [], []
    for i, g in enumerate(groups):
        r, k = g.values["final_reward"], g.values["final_kl"]
        if r.mean is None or k.mean is None:
            continue
        color = colors[i % len(colors)]
        xerr = None if k.lo is None else [[k.mean - k.lo], [k.hi - k.mean]]
        yerr = None if r.lo is None else [[r.mean - r.lo], [r.hi - r.mean]]
        ax.errorbar([k.mean], [r.mean], xerr=xerr, yerr=yerr, fmt="none", ecolor=color, alpha=0.5, capsize=3)
        ax.scatter([k.mean], [r.mean], s=90 if g.on_frontier else 45, marker="*" if g.on_frontier else "o",
                   color=color if g.on_frontier else "white", edgecolors=color, linewidths=1.5, zorder=3)
        labels.append((g, k.mean, r.mean))
        if g.on_frontier:
            front.append((k.mean, r.mean))
    _place_labels(ax, labels)
    if len(front) > 1:
        front.sort()
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", linestyle="--",
                linewidth=1, label="frontier (★)")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("final KL to the reference (objective/kl)")
    ax.set_ylabel("final reward (objective/scores)")
    ax.set_title("reward against KL, one point per group (★ = on the frontier; bars = 95% CI)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.append(out / "reward_vs_kl.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files


def _place_labels(ax, labels: list) -> None:
    """Each point's label at whichever corner (above/below, right/left) keeps its middle farthest from the other
    points and the labels already placed (in points on the page), so close groups stay readable."""
    scale = 72 / ax.figure.dpi
    at = [tuple(v * scale for v in ax.transData.transform((kx, ry))) for _, kx, ry in labels]
    taken = list(at)
    for (g, kx, ry), (px, py) in zip(labels, at):
        text = _short(g.label, 30)
        width = 4.8 * len(text)  # points, at fontsize 8
        best = None
        for dx, dy, ha in ((6, 6, "left"), (6, -13, "left"), (-6, 6, "right"), (-6, -13, "right")):
            middle = (px + dx + (width / 2 if ha == "left" else -width / 2), py + dy + 4)
            others = [q for q in taken if q != (px, py)]
            room = min((math.hypot((middle[0] - qx) / 2, middle[1] - qy) for qx, qy in others), default=1e9)
            if best is None or room > best[0]:
                best = (room, dx, dy, ha, middle)
        _, dx, dy, ha, middle = best
        taken.append(middle)
        ax.annotate(text, (kx, ry), textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=8,
                    fontweight="bold" if g.on_frontier else "normal")
