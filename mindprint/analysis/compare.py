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
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from mindprint.analysis import stats
from mindprint.analysis.groups import COLUMNS, Group, common_budget, group_runs, summarise_groups
from mindprint.analysis.plots import X_LABELS, plot
from mindprint.analysis.runs import CompareError, Run, best_trial, discover, read_yaml


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
        data = read_yaml(results) or {}
        params = data.get("best_params") or {}
        trial = best_trial(params, [r for r in runs if r.path.parent == sweep])
        where = f"`{trial.path.name}`" if trial else "(no job directory matches its parameters)"
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        lines.append(f"Optuna study in `{sweep}`: best trial {where}, {shown}, objective {data.get('best_value')}.")
    return lines


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
    cut = [r for r in runs if r.cut_short]
    if cut:
        text += ["Runs stopped while writing a line of metrics.jsonl (killed, or still running), read up to their last "
                 "complete line: " + ", ".join(f"`{r.path}`" for r in cut) + ".", ""]
    if failed:
        text += ["Failed runs (left out of the groups):", "",
                 *[f"- `{r.path.name}`: {r.failure}" for r in failed], ""]
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
        plots = plot(groups, x, budget, method, staging)
        text += [f"![{f.stem}]({f.name})" for f in plots] + [""]
        (staging / "comparison.json").write_text(json.dumps(data, indent=1))
        (staging / "report.md").write_text("\n".join(text))
        for f in sorted(staging.iterdir()):  # the report last: it is there only when its plots are
            if f.name != "report.md":
                os.replace(f, out / f.name)
        os.replace(staging / "report.md", out / "report.md")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "report.md"

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
        for run in runs:
            if run.cut_short:
                print(f"warning: {run.path / 'metrics.jsonl'} ends in a cut line (the run was stopped while writing it, "
                      "or is still running): read up to its last complete line", file=sys.stderr)
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
    except OSError as err:  # --out a file, a directory that cannot be written: nothing of the report was left there
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: the report could not be written: {err.strerror or err}{where}", file=sys.stderr)
        sys.exit(2)
    print(path.read_text().split("\n![")[0])
    print(f"report: {path}")


if __name__ == "__main__":
    main()
