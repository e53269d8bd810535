"""Runs grouped for a comparison: runs whose settings differ only in `seed` form a group, labelled by what sets
it apart; each group's final values with confidence intervals at a common budget, and the reward–KL frontier."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from mindprint.analysis import stats
from mindprint.analysis.runs import CompareError, Run

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
