"""`python -m mindprint.bench cpu [--reps N]`: mindprint and TRL 1.12's PPOTrainer side by side.

Both train the same tiny policy (+ the same LoRA), the same value model and the same reward model
(sharing the policy's tokenizer, which TRL requires) on the same prompts, with the same batch,
minibatch, micro-batch, response length and PPO epochs, in fp32 on the CPU. Each runs `--reps` times
in a fresh process; the median episodes/s is compared. Writes outputs/bench/cpu_tiny.json.
TRL runs from its own venv (`make bench` builds .venv-trl with trl==1.12.0, its last PPO release).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mindprint.config import asset_path
from mindprint.tiny import ensure_tiny

REPO = Path(__file__).resolve().parent.parent
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SETUP = dict(batch_size=32, mini_batch_size=8, micro_batch_size=8, ppo_epochs=4, steps=10, response_length=12,
             temperature=1.0, learning_rate=5e-3, kl_coef=0.05, lora_rank=8, lora_alpha=16.0,
             target_modules=SEVEN, seed=0)
PHASES = ("generate", "reference", "value", "reward", "update")


def mindprint_overrides(s: dict, reward: str, out: Path) -> list[str]:
    return [
        "+experiment=demo", f"reward.name={reward}", "reward.quantization=none", "ppo.adaptive_kl=false",
        f"ppo.init_kl_coef={s['kl_coef']}", f"ppo.steps={s['steps']}", f"ppo.batch_size={s['batch_size']}",
        f"ppo.mini_batch_size={s['mini_batch_size']}", f"ppo.micro_batch_size={s['micro_batch_size']}",
        f"ppo.ppo_epochs={s['ppo_epochs']}", f"ppo.response_length={s['response_length']}",
        f"ppo.temperature={s['temperature']}", f"ppo.learning_rate={s['learning_rate']}",
        f"ppo.value_learning_rate={s['learning_rate']}", f"lora.rank={s['lora_rank']}",
        f"lora.alpha={s['lora_alpha']}", f"lora.target_modules=[{','.join(s['target_modules'])}]",
        "data.eval_size=0", "checkpoint.every=0", "device=cpu", f"seed={s['seed']}", f"hydra.run.dir={out}",
    ]


def run_mindprint(s: dict, reward: str, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # each repetition is a fresh run
    proc = subprocess.run([sys.executable, "-m", "mindprint.run", *mindprint_overrides(s, reward, out)],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mindprint run failed: {proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"episodes_per_s": summary["eps"], "wall_s": summary["wall_s"],
            "phases": {p: summary[f"share/{p}"] for p in PHASES}}


def run_trl(s: dict, python: Path) -> dict:
    proc = subprocess.run([str(python), str(REPO / "benchmarks" / "trl_ppo.py"), json.dumps(s)],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"TRL run failed: {proc.stderr[-2000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith('{"episodes_per_s"')][-1])


def bench_cpu(reps: int, trl_python: Path, out_dir: Path) -> dict:
    policy, reward = ensure_tiny("policy"), ensure_tiny("classifier")
    s = {**SETUP, "policy": policy, "reward": reward, "prompts": asset_path("demo_prompts.jsonl")}
    ours, theirs = [], []
    for rep in range(reps):
        ours.append(run_mindprint(s, reward, out_dir / "runs" / f"mindprint-{rep}"))
        theirs.append(run_trl(s, trl_python))
    median = lambda runs: statistics.median(r["episodes_per_s"] for r in runs)  # noqa: E731
    best = min(ours, key=lambda r: abs(r["episodes_per_s"] - median(ours)))
    result = {
        "mindprint": {"episodes_per_s": median(ours), "phases": best["phases"],
                      "runs": [r["episodes_per_s"] for r in ours]},
        "trl": {"episodes_per_s": median(theirs), "version": "1.12.0", "runs": [r["episodes_per_s"] for r in theirs]},
        "ratio": median(ours) / median(theirs),
        "setup": {**SETUP, "reps": reps, "models": "tiny Qwen3 (2 layers, hidden 64), fp32",
                  "cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cpu_tiny.json").write_text(json.dumps(result, indent=1))
    return result


def print_result(result: dict) -> None:
    table = Table(title="PPO episodes per second, tiny models on CPU (median of reps)")
    for col in ("trainer", "episodes/s", "runs"):
        table.add_column(col)
    for name in ("mindprint", "trl"):
        r = result[name]
        table.add_row(name, f"{r['episodes_per_s']:.1f}", ", ".join(f"{x:.1f}" for x in r["runs"]))
    console = Console(width=120)
    console.print(table)
    shares = ", ".join(f"{p} {v:.0%}" for p, v in result["mindprint"]["phases"].items())
    console.print(f"ratio mindprint / TRL = {result['ratio']:.2f}×; mindprint time: {shares}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mindprint.bench", description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=["cpu"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--trl-python", type=Path, default=REPO / ".venv-trl" / "bin" / "python")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench")
    args = parser.parse_args(argv)
    if not args.trl_python.exists():
        print(f"error: --trl-python={str(args.trl_python)!r} does not exist: run `make bench`, which builds it",
              file=sys.stderr)
        sys.exit(2)
    print_result(bench_cpu(args.reps, args.trl_python, args.out))
    print(f"written: {args.out / 'cpu_tiny.json'}")


if __name__ == "__main__":
    main()
