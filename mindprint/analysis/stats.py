"""The numbers a comparison rests on, defined once: a run's headline values, its budget axes, the objective a
sweeper optimises, confidence intervals across seeds, and the reward–KL frontier.

`python -m mindprint.compare` reads them off metrics.jsonl; the tracker writes the same headline values into
each W&B run's summary; `mindprint.run` returns `objective_value` to a sweeper (Optuna). So a report, a
dashboard and a search agree on what "final reward" means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# ---------------------------------------------------------------- one run

HEADLINE = {  # key: (what the report calls it, how it is read off the history)
    "final_reward": "final reward: mean of objective/scores over the last fifth of iterations",
    "best_reward": "best reward: max of objective/scores",
    "final_kl": "final KL: mean of objective/kl over the last fifth of iterations",
    "mean_clipfrac": "mean clipfrac: mean of policy/clipfrac_avg over all iterations",
    "held_out_reward": "held-out reward: eval/scores at the last evaluation",
    "wall_s": "wall time: seconds of training to the last iteration (time/elapsed_s, resumes included)",
}


def series(history: Sequence[dict], key: str) -> list[float]:
    return [row[key] for row in history if row.get(key) is not None]


def tail_mean(values: Sequence[float]) -> Optional[float]:
    """Mean over the last fifth of `values` (at least one): a final value that one noisy batch does not decide."""
    if not values:
        return None
    tail = values[-max(1, len(values) // 5):]
    return float(sum(tail) / len(tail))


def headline(history: Sequence[dict]) -> dict[str, Optional[float]]:
    """The report's values for one run (see HEADLINE); None where the history lacks the metric."""
    scores, clip, held_out = (series(history, k) for k in ("objective/scores", "policy/clipfrac_avg", "eval/scores"))
    seconds = axis(history, "seconds")
    return {
        "final_reward": tail_mean(scores),
        "best_reward": max(scores) if scores else None,
        "final_kl": tail_mean(series(history, "objective/kl")),
        "mean_clipfrac": sum(clip) / len(clip) if clip else None,
        "held_out_reward": held_out[-1] if held_out else None,
        "wall_s": seconds[-1] if seconds and seconds[-1] is not None else None,
    }


AXES = ("episodes", "tokens", "seconds")


def axis(history: Sequence[dict], x: str) -> list[Optional[float]]:
    """Each iteration's position on a budget axis, cumulative from the start of the run.

    episodes: the `episode` counter. tokens: Σ episodes of the iteration × `env/response_length` (mean real
    tokens per response), i.e. generated tokens. seconds: wall-clock seconds of training (evaluation included),
    `time/elapsed_s`, which a resumed run continues from its checkpoint. Metrics written before that key existed
    give `episode / eps` instead (eps = episodes / seconds since the process started: right unless resumed).
    """
    if x == "episodes":
        return [row.get("episode") for row in history]
    if x == "tokens":
        out, total, before = [], 0.0, 0
        for row in history:
            episode, length = row.get("episode"), row.get("env/response_length")
            if episode is None or length is None:
                out.append(None)
                continue
            total += (episode - before) * length
            before = episode
            out.append(total)
        return out
    if x == "seconds":
        return [row["time/elapsed_s"] if "time/elapsed_s" in row
                else row["episode"] / row["eps"] if row.get("eps") and row.get("episode") is not None else None
                for row in history]
    raise ValueError(f"x={x!r} is not allowed: expected one of {', '.join(AXES)}")


def cut(history: Sequence[dict], x: str, budget: float) -> list[dict]:
    """The iterations at or within `budget` on axis `x`."""
    return [row for row, pos in zip(history, axis(history, x)) if pos is not None and pos <= budget + 1e-9]


# ---------------------------------------------------------------- the objective a sweeper maximises

OBJECTIVES = ("held_out_reward", "reward_minus_kl")


def objective_value(name: str, kl_weight: float, history: Sequence[dict]) -> float:
    """held_out_reward: eval/scores at the run's last evaluation (held-out prompts; every run evaluates at its end).
    reward_minus_kl: final reward − kl_weight · final KL (last-fifth means of objective/scores and objective/kl:
    the point the report's frontier plot shows, so maximising it picks the frontier's point where its slope is
    kl_weight). NaN when the run has no such value (no held-out prompts, say): Optuna counts the trial failed."""
    h = headline(history)
    if name == "held_out_reward":
        value = h["held_out_reward"]
    elif name == "reward_minus_kl":
        value = None if h["final_reward"] is None or h["final_kl"] is None else h["final_reward"] - kl_weight * h["final_kl"]
    else:
        raise ValueError(f"objective.name={name!r} is not allowed: expected one of {', '.join(OBJECTIVES)}")
    return float("nan") if value is None else float(value)


# ---------------------------------------------------------------- across seeds

CI_METHODS = ("t", "bootstrap")
BOOTSTRAP_MIN_N = 5  # below this a bootstrap of the mean is too coarse: such groups get the t interval
BOOTSTRAP_RESAMPLES = 10_000


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student's t quantile with `df` degrees of freedom (t_{0.975, 2} = 4.303)."""
    from scipy.stats import t

    return float(t.ppf(q, df))


@dataclass(frozen=True)
class Interval:
    mean: Optional[float]
    lo: Optional[float]  # None when n < 2: one seed gives no interval
    hi: Optional[float]
    n: int
    method: str  # "t" or "bootstrap": which one this interval is


def mean_ci(values: Sequence[Optional[float]], method: str = "t", level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of `values` (None and NaN dropped) and its `level` confidence interval.

    t: mean ± t_{(1+level)/2, n−1} · s/√n, with s the sample standard deviation (n−1 in the denominator).
    bootstrap (n ≥ 5 only, else t): the percentile interval of the means of 10,000 resamples with replacement,
    drawn from a generator seeded with `seed`, so a report is reproducible.
    """
    if method not in CI_METHODS:
        raise ValueError(f"--ci={method!r} is not allowed: expected one of {', '.join(CI_METHODS)}")
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(xs)
    if n == 0:
        return Interval(None, None, None, 0, method)
    mean = float(xs.mean())
    if n < 2:
        return Interval(mean, None, None, n, method)
    if method == "bootstrap" and n >= BOOTSTRAP_MIN_N:
        rng = np.random.default_rng(seed)
        means = xs[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        return Interval(mean, float(lo), float(hi), n, "bootstrap")
    half = t_quantile(n - 1, (1 + level) / 2) * float(xs.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, "t")


# ---------------------------------------------------------------- the frontier

def frontier(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (reward, kl) points: True where no other point dominates, i.e. has at least the reward at no more KL
    and is strictly better in one of the two (reward ↑, KL ↓). Ties (equal points) are all on the frontier."""
    out = []
    for i, (r, k) in enumerate(points):
        dominated = any(r2 >= r and k2 <= k and (r2 > r or k2 < k)
                        for j, (r2, k2) in enumerate(points) if j != i)
        out.append(not dominated)
    return out
