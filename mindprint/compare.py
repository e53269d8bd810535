"""`python -m mindprint.compare PATH [PATH ...]`: a Markdown report and plots comparing finished runs.

PATH is a sweep directory (grid or Optuna; its job directories are the runs) or a run directory, as many as
you like: one study launched as two sweeps is two PATHs. Runs whose configs differ only in `seed` form a group;
each group gets the mean and a 95% confidence interval of its final values and a band around its mean curves,
all read at an equal budget (--x episodes|tokens|seconds: the shortest run's). A reward–KL plot marks the
groups on the frontier. Runs that differ in a key no override varies are refused unless --allow-mixed.

The report (`report.md`), its data (`comparison.json`) and the PNG plots go into the sweep directory, or into
--out (default: the runs' common parent). Reads only what runs write locally (metrics.jsonl, summary.json,
.hydra/), so W&B is optional.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from mindprint import stats  # noqa: E402
from mindprint.sweep import FAILED  # noqa: E402
from mindprint.tracking import flatten  # noqa: E402

# Keys that do not change what a run learns: left out of a run's setting, so seeds (and reruns logged
# elsewhere, or checkpointed more often) fall into one group. ppo.steps is a budget, not a setting, while the
# learning rate is constant (compare cuts runs at the shortest common budget); with a schedule it is a setting.
NOT_A_SETTING = ("seed", "logger.", "checkpoint.", "resume", "dry_run", "objective.")
# Overrides that say how a run is launched or logged, never what differs between runs.
LAUNCH_OVERRIDES = ("hydra.", "hydra/", "logger", "checkpoint", "resume", "dry_run")
MISSING = "<unset>"

# (column, headline key, number format)
COLUMNS = [
    ("final reward", "final_reward", ".3f"),
    ("best reward", "best_reward", ".3f"),
    ("final KL", "final_kl", ".2f"),
    ("mean clipfrac", "mean_clipfrac", ".3f"),
    ("held-out reward", "held_out_reward", ".3f"),
    ("wall time (s)", "wall_s", ".1f"),
]
CURVES = {"reward": "objective/scores", "kl": "objective/kl", "clipfrac": "policy/clipfrac_avg"}
X_LABELS = {"episodes": "episodes", "tokens": "generated tokens", "seconds": "wall-clock seconds"}


class CompareError(Exception):
    """A user mistake (a bad path, runs that should not be compared, a bad option): one line, exit code 2."""


# ------------------------------------------------------------------------------------------------ runs


@dataclass
class Run:
    path: Path
    name: str
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    failure: Optional[str] = None
    config: Optional[dict] = None  # flattened .hydra/config.yaml (None: the run has none)
    overrides: dict[str, str] = field(default_factory=dict)  # key → value of .hydra/overrides.yaml
    history: list[dict] = field(default_factory=list)  # metrics within the common budget

    @property
    def seed(self) -> Any:
        return (self.config or {}).get("seed")

    def setting(self) -> Optional[dict]:
        if self.config is None:
            return None
        keep = dict(self.config)
        if keep.get("ppo.lr_scheduler", "constant") == "constant":
            keep.pop("ppo.steps", None)
        return {k: v for k, v in keep.items() if not k.startswith(NOT_A_SETTING)}


def parse_overrides(items: list) -> dict[str, str]:
    """`+experiment=demo`, `lora.rank=8`, `~ppo.x` → {"experiment": "demo", "lora.rank": "8", "ppo.x": None}."""
    out = {}
    for item in items or []:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if not key.startswith(LAUNCH_OVERRIDES):
            out[key] = value if _ else None
    return out


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CompareError(f"{path} is not allowed: it does not read as YAML ({str(err).splitlines()[0]})") from None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CompareError(f"{path} is not allowed: it does not read as JSON ({err})") from None


def read_metrics(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise CompareError(f"{path} is not allowed: line {n} is not JSON") from None
    return rows


def _name(path: Path, overrides: dict[str, str]) -> str:
    items = [f"{k}={v}" for k, v in overrides.items() if k != "experiment"]
    return ",".join(items) or path.name


def load_run(path: Path) -> Run:
    hydra_dir = path / ".hydra"
    config = flatten(_yaml(hydra_dir / "config.yaml") or {}) if (hydra_dir / "config.yaml").exists() else None
    overrides = parse_overrides(_yaml(hydra_dir / "overrides.yaml")) if (hydra_dir / "overrides.yaml").exists() else {}
    summary = _json(path / "summary.json") if (path / "summary.json").exists() else {}
    run = Run(path=path, name=summary.get("name") or _name(path, overrides), summary=summary, config=config,
              overrides=overrides)
    if (path / FAILED).exists():
        run.failure = (path / FAILED).read_text().strip()
    if (path / "metrics.jsonl").exists():
        run.metrics = read_metrics(path / "metrics.jsonl")
        if not run.metrics and run.failure is None:
            run.failure = "empty metrics.jsonl"
    elif run.failure is None:
        run.failure = "no metrics.jsonl"
    return run


def _is_run(path: Path) -> bool:
    return (path / "metrics.jsonl").exists() or (path / FAILED).exists()


def discover(paths: list[Path]) -> tuple[list[Run], list[Path]]:
    """(runs, sweep directories) under `paths`."""
    runs, sweeps = [], []
    for path in paths:
        if not path.is_dir():
            raise CompareError(f"PATH={str(path)!r} is not allowed: expected a sweep or run directory")
        if _is_run(path):
            runs.append(load_run(path))
            continue
        jobs = sorted((p for p in path.iterdir() if p.is_dir() and ((p / ".hydra").exists() or _is_run(p))),
                      key=_job_order)
        if not jobs:
            raise CompareError(f"PATH={str(path)!r} is not allowed: it holds no run (no metrics.jsonl found)")
        sweeps.append(path)
        runs += [load_run(p) for p in jobs]
    seen: dict[Path, int] = {}
    for run in runs:
        seen[run.path.resolve()] = seen.get(run.path.resolve(), 0) + 1
    twice = [str(p) for p, n in seen.items() if n > 1]
    if twice:
        raise CompareError(f"PATH is not allowed twice: {twice[0]} was given more than once")
    return runs, sweeps


def _job_order(path: Path) -> tuple:
    num, _, rest = path.name.partition("_")
    return (0, int(num), rest) if num.isdigit() else (1, 0, path.name)


# ------------------------------------------------------------------------------------------------ groups


@dataclass
class Group:
    runs: list[Run]
    label: str = ""
    values: dict[str, stats.Interval] = field(default_factory=dict)
    on_frontier: bool = False

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def lora_params(self) -> Optional[int]:
        found = {r.summary.get("lora/trainable_params") for r in self.runs} - {None}
        return found.pop() if len(found) == 1 else None


def _setting_key(run: Run) -> tuple:
    setting = run.setting()
    if setting is None:  # no .hydra/config.yaml: the run's name without its seed says what it is
        return ("name", ",".join(p for p in run.name.split(",") if not p.startswith("seed=")))
    return tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in setting.items()))


def _fmt_value(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return "null" if value is None else str(value)


def group_runs(runs: list[Run], allow_mixed: bool = False) -> tuple[list[Group], list[str]]:
    """Runs with one setting (config without `seed`, ...) form a group; label each by what sets it apart.

    A key that differs between runs must be explained by an override: two runs whose overrides agree on that key
    (and on its group, `reward=...`, and on `+experiment=...`) but whose configs differ in it were made by different
    code or config files, and comparing them would mislead: refused unless `allow_mixed`.
    """
    groups: dict[tuple, Group] = {}
    for run in runs:
        groups.setdefault(_setting_key(run), Group(runs=[])).runs.append(run)
    out = list(groups.values())
    notes: list[str] = []
    configured = [r for r in runs if r.config is not None]
    if len(configured) < len(runs):
        notes.append(f"{len(runs) - len(configured)} run(s) have no .hydra/config.yaml: grouped by name, "
                     "not checked for differences")
    settings = {id(r): r.setting() for r in configured}
    keys = sorted({k for s in settings.values() for k in s})
    differing = [k for k in keys if len({_fmt_value(s.get(k, MISSING)) for s in settings.values()}) > 1]
    override_keys = sorted({o for r in configured for o in r.overrides})

    def covering(key: str) -> list[str]:
        return [o for o in override_keys if o == key or key.startswith(o + ".") or o == "experiment"]

    unexplained = {}
    for key in differing:
        cover = covering(key)
        seen: dict[tuple, tuple[Run, str]] = {}
        for run in configured:
            sig = tuple(run.overrides.get(o, MISSING) for o in cover)
            value = _fmt_value(settings[id(run)].get(key, MISSING))
            if sig in seen and seen[sig][1] != value:
                unexplained[key] = (seen[sig], (run, value))
                break
            seen.setdefault(sig, (run, value))
    if unexplained and not allow_mixed:
        key, ((a, va), (b, vb)) = next(iter(unexplained.items()))
        more = f" (and {len(unexplained) - 1} more key(s))" if len(unexplained) > 1 else ""
        raise CompareError(
            f"runs differ in {key}, which no override varies: {va} in {a.path}, {vb} in {b.path}{more}; "
            "compare runs of one study, or add --allow-mixed"
        )
    if unexplained:
        notes.append("mixed (--allow-mixed): runs also differ in " + ", ".join(f"`{k}`" for k in unexplained)
                     + ", which no override varies; those keys are in the setting column")
    _label(out, differing, set(unexplained))
    return out, notes


def _label(groups: list[Group], differing: list[str], unexplained: set[str]) -> None:
    """Each group's label: only the overrides (or config keys) that differ between groups."""
    reps = [g.runs[0] for g in groups]
    if len(groups) == 1:
        groups[0].label = "all runs" if reps[0].config is not None else reps[0].name
        return
    varied = [o for o in sorted({o for r in reps for o in r.overrides})
              if len({r.overrides.get(o, MISSING) for r in reps}) > 1]
    for group, rep in zip(groups, reps):
        if rep.config is None:
            group.label = ",".join(p for p in rep.name.split(",") if not p.startswith("seed="))
            continue
        setting, parts = rep.setting(), []
        for key in differing:
            exact = [o for o in varied if o == key]
            parent = sorted((o for o in varied if key.startswith(o + ".") or o == "experiment"), key=len,
                            reverse=True)
            if exact or key in unexplained or not parent:
                part = f"{key}={_fmt_value(setting.get(key, MISSING))}"
            else:
                value = rep.overrides.get(parent[0], MISSING)
                part = f"{parent[0]}={value}" if value is not None else f"~{parent[0]}"
            if part not in parts:
                parts.append(part)
        group.label = ",".join(parts) or rep.name


# ------------------------------------------------------------------------------------------------ budget


def common_budget(runs: list[Run], x: str) -> tuple[float, Run, bool]:
    """(the shortest run's last position on axis x, that run, whether any run goes past it)."""
    ends = []
    for run in runs:
        positions = [p for p in stats.axis(run.metrics, x) if p is not None]
        if not positions:
            need = {"episodes": "episode", "tokens": "episode and env/response_length",
                    "seconds": "time/elapsed_s (or episode and eps)"}
            raise CompareError(f"--x={x} is not allowed for {run.path}: its metrics.jsonl has no {need[x]}")
        ends.append((positions[-1], run))
    budget, shortest = min(ends, key=lambda e: e[0])
    return budget, shortest, any(end > budget + 1e-9 for end, _ in ends)


def summarise_groups(groups: list[Group], method: str) -> None:
    for group in groups:
        heads = [stats.headline(r.history) for r in group.runs]
        group.values = {key: stats.mean_ci([h[key] for h in heads], method) for _, key, _ in COLUMNS}
    points = [(g.values["final_reward"].mean, g.values["final_kl"].mean) for g in groups]
    ok = [i for i, (r, k) in enumerate(points) if r is not None and k is not None]
    if len(ok) < 2:  # a frontier needs something to beat
        return
    for i, on in zip(ok, stats.frontier([points[i] for i in ok])):
        groups[i].on_frontier = on


# ------------------------------------------------------------------------------------------------ report


def _cell(iv: stats.Interval, spec: str) -> str:
    if iv.mean is None:
        return "—"
    if iv.lo is None:
        return format(iv.mean, spec)
    return f"{iv.mean:{spec}} [{iv.lo:{spec}}, {iv.hi:{spec}}]"


def table(groups: list[Group]) -> str:
    head = "| setting | n | LoRA params | " + " | ".join(c for c, _, _ in COLUMNS) + " | frontier |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(COLUMNS) + ":---:|"]
    for g in groups:
        params = "—" if g.lora_params is None else f"{g.lora_params:,}"
        cells = " | ".join(_cell(g.values[key], spec) for _, key, spec in COLUMNS)
        lines.append(f"| {g.label} | {g.n} | {params} | {cells} | {'★' if g.on_frontier else ''} |")
    return "\n".join(lines)


def _ci_sentence(groups: list[Group], method: str) -> str:
    used = {iv.method for g in groups for iv in g.values.values() if iv.lo is not None}
    t = "t: mean ± t(0.975, n−1)·s/√n, s the standard deviation across seeds (n−1 in its denominator)"
    boot = (f"bootstrap: the 2.5% and 97.5% quantiles of the means of {stats.BOOTSTRAP_RESAMPLES:,} resamples of "
            "the seeds (seeded, so the report is reproducible)")
    if method == "bootstrap":
        text = f"95% confidence intervals by {boot}"
        if "t" in used:
            text += f"; groups with fewer than {stats.BOOTSTRAP_MIN_N} seeds get the t interval ({t})"
    else:
        text = f"95% confidence intervals by {t}"
    return text + ". A group of one run has no interval."


def budget_sentence(x: str, budget: float, shortest: Run, cut_any: bool, runs: list[Run]) -> str:
    amount = f"{budget:,.0f} {X_LABELS[x]}" if x != "seconds" else f"{budget:,.1f} {X_LABELS[x]}"
    if not cut_any:
        return f"All runs are read at an equal budget of {amount}, which every run reaches (--x {x})."
    longer = sum(1 for r in runs if len(r.history) < len(r.metrics))
    return (f"Runs are read at the shortest common budget, {amount} (--x {x}), set by {shortest.path}: "
            f"{longer} run(s) went further and are cut there, so their final values, curves and wall time stop "
            "at that budget.")


def optuna_lines(sweeps: list[Path], runs: list[Run]) -> list[str]:
    """Each Optuna sweep's best trial, found by its parameters in the sweep's job overrides."""
    lines = []
    for sweep in sweeps:
        results = sweep / "optimization_results.yaml"
        if not results.exists():
            continue
        data = _yaml(results) or {}
        params = data.get("best_params") or {}
        trial = best_trial(sweep, params, [r for r in runs if r.path.parent == sweep])
        where = f"`{trial.path.name}`" if trial else "(no job directory matches its parameters)"
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        lines.append(f"Optuna study in `{sweep}`: best trial {where}, {shown}, objective {data.get('best_value')}.")
    return lines


def best_trial(sweep: Path, params: dict, runs: list[Run]) -> Optional[Run]:
    def matches(run: Run) -> bool:
        for key, want in params.items():
            got = run.overrides.get(key)
            try:
                if got is None or not math.isclose(float(got), float(want), rel_tol=1e-9):
                    return False
            except (TypeError, ValueError):
                if str(got) != str(want):
                    return False
        return True

    found = [r for r in runs if matches(r) and r.failure is None]
    return found[0] if found else None


def report(runs: list[Run], sweeps: list[Path], out: Path, x: str = "episodes", method: str = "t",
           allow_mixed: bool = False) -> Path:
    """Everything is computed before anything is written: a refusal leaves nothing behind, half-written or not."""
    if x not in stats.AXES:
        raise CompareError(f"--x={x} is not allowed: expected one of {', '.join(stats.AXES)}")
    if method not in stats.CI_METHODS:
        raise CompareError(f"--ci={method} is not allowed: expected one of {', '.join(stats.CI_METHODS)}")
    done = [r for r in runs if r.failure is None]
    failed = [r for r in runs if r.failure is not None]
    if not done:
        raise CompareError(f"PATH is not allowed: no completed run among {len(runs)} ({failed[0].path}: "
                           f"{failed[0].failure})")
    groups, notes = group_runs(done, allow_mixed)
    budget, shortest, cut_any = common_budget(done, x)
    for run in done:
        run.history = stats.cut(run.metrics, x, budget)
    summarise_groups(groups, method)
    frontier_names = [g.label for g in groups if g.on_frontier]
    sizes = sorted({g.n for g in groups})
    text = [
        f"# mindprint comparison: {len(done)} runs in {len(groups)} group(s)"
        + (f", {len(failed)} failed" if failed else ""),
        "",
        f"Runs whose configs differ only in `seed` form a group (n = its runs). {_ci_sentence(groups, method)}",
        budget_sentence(x, budget, shortest, cut_any, done),
        "Final reward and final KL are means of `objective/scores` and `objective/kl` over the last fifth of the "
        "iterations within the budget; best reward is the highest `objective/scores`; mean clipfrac averages "
        "`policy/clipfrac_avg`; held-out reward is `eval/scores` at the last evaluation within the budget; wall "
        "time is the seconds from the start of training to the budget.",
        *([f"Groups have unequal sizes (n = {', '.join(map(str, sizes))})."] if len(sizes) > 1 else []),
        *notes,
        "",
        table(groups),
        "",
        ("On the reward–KL frontier (no other group has at least its final reward at no more final KL, and more of "
         f"one or less of the other; group means): {', '.join(f'`{n}`' for n in frontier_names)}."
         if len(groups) > 1 else "One group: no frontier to draw."),
        *optuna_lines(sweeps, runs),
        "",
    ]
    if failed:
        text += ["Failed runs (left out of the groups):", "",
                 *[f"- `{r.path.name}`: {r.failure}" for r in failed], ""]
    plots = ["reward", "kl", "clipfrac", "reward_vs_kl"]
    text += [f"![{stem}]({stem}.png)" for stem in plots] + [""]
    data = {
        "x": x, "budget": budget, "ci": method, "level": 0.95,
        "groups": [{"label": g.label, "n": g.n, "on_frontier": g.on_frontier,
                    "runs": [str(r.path) for r in g.runs],
                    **{key: {"mean": iv.mean, "lo": iv.lo, "hi": iv.hi, "n": iv.n, "method": iv.method}
                       for key, iv in g.values.items()}} for g in groups],
        "failed": [{"run": str(r.path), "failure": r.failure} for r in failed],
    }
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".compare-", dir=out))
    try:
        plot(groups, x, budget, method, staging)
        (staging / "comparison.json").write_text(json.dumps(data, indent=1))
        (staging / "report.md").write_text("\n".join(text))
        for f in sorted(staging.iterdir()):  # the report last: it is there only when its plots are
            if f.name != "report.md":
                os.replace(f, out / f.name)
        os.replace(staging / "report.md", out / "report.md")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "report.md"


# ------------------------------------------------------------------------------------------------ plots


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
    for stem, key in CURVES.items():
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


# ------------------------------------------------------------------------------------------------ CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as every user mistake
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: Optional[list[str]] = None) -> None:
    parser = _Parser(prog="python -m mindprint.compare", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="sweep directories (grid or Optuna) or run directories")
    parser.add_argument("--out", type=Path, default=None, help="where report.md, comparison.json and the plots go")
    parser.add_argument("--x", default="episodes", help="budget axis: episodes (default), tokens or seconds")
    parser.add_argument("--ci", default="t", help="t (default) or bootstrap (groups of 5 or more seeds)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="compare runs that differ in keys no override varies (they are then shown)")
    args = parser.parse_args(argv)
    try:
        if args.x not in stats.AXES:
            raise CompareError(f"--x={args.x} is not allowed: expected one of {', '.join(stats.AXES)}")
        if args.ci not in stats.CI_METHODS:
            raise CompareError(f"--ci={args.ci} is not allowed: expected one of {', '.join(stats.CI_METHODS)}")
        runs, sweeps = discover(args.paths)
        if args.out is not None:
            out = args.out
        elif len(args.paths) == 1 and sweeps:
            out = args.paths[0]
        else:
            out = Path(os.path.commonpath([str(r.path.parent.resolve()) for r in runs]))
        path = report(runs, sweeps, out, args.x, args.ci, args.allow_mixed)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(path.read_text().split("\n![")[0])
    print(f"report: {path}")


if __name__ == "__main__":
    main()
