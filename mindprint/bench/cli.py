"""`python -m mindprint.bench cpu|gpu`: mindprint and TRL side by side.

cpu: PPO against TRL 1.12's PPOTrainer (its last PPO release, from .venv-trl, which `make bench` builds), and
GRPO and RLOO against TRL 1.16's GRPOTrainer and RLOOTrainer (mindprint/bench/trl_grpo.py, in this venv). Both
sides train the same tiny policy (+ the same LoRA) and reward model (sharing the policy's tokenizer, which
TRL requires) on the same prompts, with the same batch, minibatch, micro-batch, group size, response length
and epochs, in fp32. Each runs `--reps` times in a fresh process, the two back to back; the median
episodes/s is compared. Writes outputs/bench/cpu_tiny.json (PPO at the top level, `grpo` and `rloo` keys).
gpu: see mindprint/bench_gpu.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
from pathlib import Path

import transformers
import trl
from rich.console import Console
from rich.table import Table

from mindprint.bench.gpu import PRECISIONS, bench_gpu
from mindprint.bench.runs import run_mindprint, run_trl, trl_critic_free_setup, trl_setup
from mindprint.cli import compose
from mindprint.config import KV_CACHES
from mindprint.synthetic.tiny import ensure_tiny

CRITIC_FREE_BENCH = ("grpo", "rloo")  # TRL 1.16 has a trainer for these two
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The demo's models and settings, with the reward model sharing the policy's tokenizer (TRL needs that),
# unquantized, a fixed β, one learning rate, and no evaluation or checkpoints, which TRL's loops do not have either.
CPU_OVERRIDES = [
    "+experiment=demo", "reward.quantization=none", "ppo.adaptive_kl=false", "ppo.steps=10",
    "ppo.value_learning_rate=${ppo.learning_rate}",  # TRL 1.12's PPOTrainer has one learning rate for both
    f"lora.target_modules=[{','.join(SEVEN)}]",
    "data.eval_size=0", "checkpoint.every=0", "device=cpu", "seed=0",
]


def peak_rss(runs: list[dict]) -> float | None:
    """The largest peak host memory of the runs; None where it is not measured (outside Linux)."""
    peaks = [r.get("peak_rss_gib") for r in runs]
    return None if None in peaks else max(peaks)


def side_by_side(overrides: list[str], run_theirs, reps: int, out_dir: Path, name: str) -> dict:
    """`reps` back-to-back pairs of a mindprint run (its CLI, fresh process) and `run_theirs()`; medians and ratios."""
    ours, theirs = [], []
    for rep in range(reps):
        run_dir = out_dir / "runs" / f"mindprint-{name}-{rep}"
        shutil.rmtree(run_dir, ignore_errors=True)  # each repetition is a fresh run
        ours.append(run_mindprint(overrides, run_dir))
        theirs.append(run_theirs())
    return compare_runs(ours, theirs)


def compare_runs(ours: list[dict], theirs: list[dict]) -> dict:
    """Medians, ratios and TRL's time shares of back-to-back runs (ours[i] beside theirs[i])."""
    median = lambda runs: statistics.median(r["episodes_per_s"] for r in runs)  # noqa: E731
    best = min(ours, key=lambda r: abs(r["episodes_per_s"] - median(ours)))
    trl = {"episodes_per_s": median(theirs), "runs": [r["episodes_per_s"] for r in theirs],
           "peak_rss_gib": peak_rss(theirs),
           # TRL's loops run gc.collect(): the share of its training time that takes
           "gc_share": statistics.median(r["gc_s"] / r["wall_s"] for r in theirs)}
    if "phases" in theirs[0]:
        trl["phases"] = min(theirs, key=lambda r: abs(r["episodes_per_s"] - median(theirs)))["phases"]
    result = {
        "mindprint": {"episodes_per_s": median(ours), "phases": best["phases"],
                      "runs": [r["episodes_per_s"] for r in ours], "peak_rss_gib": peak_rss(ours)},
        "trl": trl,
        "ratio": median(ours) / median(theirs),
        # each repetition runs the two back to back: their ratio is less exposed to the machine's drift
        "ratio_per_rep": [a["episodes_per_s"] / b["episodes_per_s"] for a, b in zip(ours, theirs)],
    }
    if "episodes_per_s_loop" in theirs[0]:
        # TRL's steady state: without what its train() pays once (a full gc.collect, optimizer and dataloader
        # set-up), which a short run over-weights; mindprint's loop has no such one-off cost to take out
        loop = statistics.median(r["episodes_per_s_loop"] for r in theirs)
        trl["episodes_per_s_loop"] = loop
        result["ratio_loop"] = median(ours) / loop
    return result


def bench_cpu(reps: int, trl_python: Path, out_dir: Path, algos: list[str]) -> dict:
    """PPO against TRL 1.12's PPOTrainer; GRPO and RLOO against TRL 1.16's GRPOTrainer and RLOOTrainer."""
    base = [*CPU_OVERRIDES, f"reward.name={ensure_tiny('classifier')}"]
    machine = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
               "models": "tiny Qwen3 (2 layers, hidden 64), fp32", "reps": reps}
    result = {}
    if "ppo" in algos:
        setup = trl_setup(compose(base), device="cpu", bf16=False)
        result = side_by_side(base, lambda: run_trl(setup, trl_python), reps, out_dir, "ppo")
        result["trl"]["version"] = "1.12.0"
        result["setup"] = {**setup, **machine}
    for algo in (a for a in algos if a != "ppo"):
        overrides = [*base, f"algo={algo}"]
        setup = trl_critic_free_setup(compose(overrides))
        result[algo] = side_by_side(overrides, lambda s=setup: run_trl(s, Path(sys.executable), "trl_grpo.py"), reps,
                                    out_dir, algo)
        result[algo]["trl"]["version"] = trl.__version__
        result[algo]["setup"] = {**setup, **machine}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cpu_tiny.json").write_text(json.dumps(result, indent=1))
    return result


def print_cpu(result: dict, console: Console) -> None:
    for algo, row in [("ppo", result), *((a, result[a]) for a in CRITIC_FREE_BENCH if a in result)]:
        if "mindprint" not in row:
            continue
        table = Table(title=f"{algo.upper()} episodes per second, tiny models on CPU (median of reps)")
        for col in ("trainer", "episodes/s", "runs", "peak RSS GiB"):
            table.add_column(col)
        for name in ("mindprint", "trl"):
            r = row[name]
            table.add_row(name, f"{r['episodes_per_s']:.1f}", ", ".join(f"{x:.1f}" for x in r["runs"]),
                          "n/a" if r["peak_rss_gib"] is None else f"{r['peak_rss_gib']:.2f}")
        console.print(table)
        shares = ", ".join(f"{p} {v:.0%}" for p, v in row["mindprint"]["phases"].items())
        theirs = ", ".join(f"{p} {v:.0%}" for p, v in sorted(row["trl"].get("phases", {}).items(),
                                                                key=lambda kv: -kv[1])[:5])
        per_rep = row["ratio_per_rep"]
        console.print(f"ratio mindprint / TRL = {row['ratio']:.2f}× (per repetition {min(per_rep):.2f}–"
                      f"{max(per_rep):.2f}×, median {statistics.median(per_rep):.2f}×"
                      + (f"; {row['ratio_loop']:.2f}× against TRL's loop alone" if "ratio_loop" in row else "")
                      + f"); mindprint time: {shares}; "
                      f"TRL time in gc.collect: {row['trl']['gc_share']:.0%}" + (f"; TRL time: {theirs}" if theirs else ""))


def print_gpu(result: dict, console: Console) -> None:
    table = Table(title=f"PPO at {result['shapes']} shapes on {result['device']}: baseline settings, "
                        f"{result['prompt_tokens']}-token prompts, {result['steps']} iterations")
    for col in ("reward model", "trainer", "episodes/s", "generate s/iter", "peak GiB", "phases", "vs TRL"):
        table.add_column(col)
    for name, row in result["results"].items():
        for trainer in ("mindprint", "trl"):
            r = row.get(trainer)
            if r is None:
                continue
            if "error" in r:
                table.add_row(name, trainer, "failed", "", "", r["error"][:80], "")
                continue
            phases = ", ".join(f"{p[:3]} {v:.0%}" for p, v in r.get("phases", {}).items())
            generate = f"{r['generate_s']:.2f}" if "generate_s" in r else "n/a"
            peak = f"{r['peak_mem_gib']:.1f}" if "peak_mem_gib" in r else "n/a"
            ratio = f"{row['ratio']:.2f}×" if trainer == "mindprint" and "ratio" in row else ""
            table.add_row(name, trainer, f"{r['episodes_per_s']:.2f}", generate, peak, phases, ratio)
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mindprint.bench", description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=["cpu", "gpu"])
    parser.add_argument("--reps", type=int, default=3, help="cpu: repetitions of each trainer")
    parser.add_argument("--algos", default="ppo,grpo,rloo", help="cpu: algorithms to compare with TRL, comma-separated")
    parser.add_argument("--shapes", choices=["real", "small"], default="real", help="gpu: model shapes")
    parser.add_argument("--precisions", default="8bit,4bit,bf16", help="gpu: reward-model precisions, comma-separated")
    parser.add_argument("--kv-cache", default="dynamic,static",
                        help="gpu: mindprint's ppo.kv_cache values to run each precision with, comma-separated")
    parser.add_argument("--steps", type=int, default=5, help="gpu: PPO iterations per run")
    parser.add_argument("--prompt-tokens", type=int, default=512, help="gpu: tokens per prompt")
    parser.add_argument("--device", default="cuda", help="gpu: where the models run")
    parser.add_argument("--no-trl", action="store_true", help="gpu: mindprint only")
    parser.add_argument("--trl-python", type=Path, default=Path(".venv-trl/bin/python"),
                        help="TRL 1.12's venv (make bench builds it in the checkout)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    precisions, kv_caches, algos = args.precisions.split(","), args.kv_cache.split(","), args.algos.split(",")
    for option, values, allowed in (("precisions", precisions, PRECISIONS), ("kv-cache", kv_caches, KV_CACHES),
                                    ("algos", algos, ("ppo", *CRITIC_FREE_BENCH))):
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.exit(2, f"error: --{option}={bad[0]!r} is not allowed: expected some of {', '.join(allowed)}\n")
    trl_python = None if args.target == "gpu" and args.no_trl else args.trl_python
    if args.target == "cpu" and "ppo" not in algos:
        trl_python = None  # TRL 1.16, in this venv, runs GRPO and RLOO
    if trl_python is not None and not trl_python.exists():
        parser.exit(2, f"error: --trl-python={str(trl_python)!r} does not exist: run `make bench`, which builds it "
                       f"(or pass --no-trl)\n")
    transformers.utils.logging.disable_progress_bar()  # model-building bars would bury the table
    console = Console(width=140)
    if args.target == "cpu":
        print_cpu(bench_cpu(args.reps, trl_python, args.out, algos), console)
        print(f"written: {args.out / 'cpu_tiny.json'}")
    else:
        result = bench_gpu(args.shapes, precisions, kv_caches, args.steps, args.device, args.prompt_tokens, trl_python,
                           args.out)
        print_gpu(result, console)
        print(f"written: {args.out / f'gpu_{args.shapes}.json'}")


if __name__ == "__main__":
    main()
