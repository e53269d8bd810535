"""`python -m mindprint.bench gpu`: PPO at real shapes, random weights, one run per reward-model precision.

Policy and value at Qwen3-0.6B shapes and the reward model at Qwen3-8B shapes (Skywork-Reward-V2's base),
random weights built on the device and saved once under ~/.cache/mindprint/random (MINDPRINT_RANDOM_DIR),
so they load through the same `from_pretrained` path, bitsandbytes included, as the hub models. Settings
are the baseline's (experiments/baseline.yaml: batch 64, minibatch 16, micro-batch 8, 53 new tokens) on
prompts of about 500 tokens, like trl-lib/tldr's. Each precision runs in a fresh process, so the peak
memory it reports is its own; TRL 1.12's PPOTrainer runs the same setup where it can. With `--kv-cache
dynamic,static`, mindprint also runs each precision with ppo.kv_cache=static (row "8bit+static"), whose
compiled decoding step TRL has no counterpart for. Writes gpu_<shapes>.json.
`--shapes small --device cpu` runs the same code path on a CPU in seconds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from mindprint.assets import path as asset_path
from mindprint.bench.runs import run_mindprint, run_trl, trl_setup
from mindprint.cli import compose
from mindprint.synthetic.shapes import QWEN3_0_6B, QWEN3_8B, SMALL, build_random

SHAPES = {"real": {"policy": QWEN3_0_6B, "reward": QWEN3_8B}, "small": {"policy": SMALL, "reward": SMALL}}
PRECISIONS = {"8bit": "8bit", "4bit": "4bit", "bf16": "none"}  # reward-model precision → reward.quantization


def random_root() -> Path:
    return Path(os.environ.get("MINDPRINT_RANDOM_DIR") or Path.home() / ".cache" / "mindprint" / "random") / "v1"


def ensure_random(role: str, shapes: str, device: str) -> str:
    """Directory of the random `role` model ("policy" or "reward") at `shapes`, building it if needed."""
    target = random_root() / f"{role}-{shapes}"
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{role}-"))  # renamed when complete
        try:
            build_random(tmp, SHAPES[shapes][role], "causal" if role == "policy" else "classifier", device,
                         seed=0 if role == "policy" else 1)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # up to 16 GB of a half-written model
            raise
        tmp.rename(target)
    return str(target)


def write_prompts(tokenizer_dir: str, path: Path, n: int, tokens: int) -> None:
    """`n` prompts of `tokens` tokens (± a few where decoding re-splits), cut from the shipped corpus."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    lines = [line for line in Path(asset_path("corpus.txt")).read_text().splitlines() if line.strip()]
    rng = random.Random(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for _ in range(n):
            text = ""
            while len(tok(text)["input_ids"]) < tokens:
                text += rng.choice(lines) + "\n"
            ids = tok(text)["input_ids"][: tokens - 8]  # headroom: the cut text may re-encode a little longer
            f.write(json.dumps({"prompt": tok.decode(ids) + "\nTL;DR:"}) + "\n")


def overrides(policy: str, reward: str, prompts: Path, quantization: str, kv_cache: str, steps: int, device: str,
              tokens: int) -> list[str]:
    """The baseline experiment on the random models and local prompts, without evaluation or checkpoints."""
    return [
        "+experiment=baseline", f"model.name={policy}", f"reward.name={reward}", f"reward.quantization={quantization}",
        f"data.name={prompts}", "data.eval_split=null", "data.eval_size=0", f"data.max_prompt_length={tokens}",
        f"ppo.kv_cache={kv_cache}", f"ppo.steps={steps}", "ppo.eval_every=0", "checkpoint.every=0", f"device={device}",
    ]


def attempt(run, *args) -> dict:
    """A run's numbers, or the one line that says why it failed (out of memory, say): the table goes on."""
    try:
        return run(*args)
    except RuntimeError as err:
        return {"error": str(err)}


def bench_gpu(shapes: str, precisions: list[str], kv_caches: list[str], steps: int, device: str, tokens: int,
              trl_python: Path | None, out_dir: Path) -> dict:
    policy, reward = ensure_random("policy", shapes, device), ensure_random("reward", shapes, device)
    prompts = out_dir / f"prompts-{shapes}-{tokens}.jsonl"
    results, cfg = {}, None
    for precision in precisions:
        trl = None
        for kv_cache in kv_caches:
            name = precision if kv_cache == "dynamic" else f"{precision}+{kv_cache}"
            args = overrides(policy, reward, prompts, PRECISIONS[precision], kv_cache, steps, device, tokens)
            cfg = compose(args)
            if not prompts.exists():
                write_prompts(policy, prompts, n=4 * cfg.ppo.batch_size, tokens=tokens)
            run_dir = out_dir / "runs" / f"gpu-{shapes}-{name}"
            shutil.rmtree(run_dir, ignore_errors=True)
            row = {"mindprint": attempt(run_mindprint, args, run_dir)}
            if trl_python is not None and trl is None:
                # TRL trains in bf16 where mindprint's model.dtype=auto does: on a GPU. It has one KV cache, so it
                # runs once per precision and every row of that precision is compared with it.
                trl = attempt(run_trl, trl_setup(cfg, device, bf16=device != "cpu"), trl_python)
                row["trl"] = trl
            if trl is not None and "episodes_per_s" in trl and "episodes_per_s" in row["mindprint"]:
                row["ratio"] = row["mindprint"]["episodes_per_s"] / trl["episodes_per_s"]
            results[name] = row
    p = cfg.ppo
    setup = dict(batch_size=p.batch_size, mini_batch_size=p.mini_batch_size, micro_batch_size=p.micro_batch_size,
                 ppo_epochs=p.ppo_epochs, response_length=p.response_length, lora_rank=cfg.lora.rank,
                 lora_targets=list(cfg.lora.target_modules))
    result = {"shapes": shapes, "device": device, "steps": steps, "prompt_tokens": tokens, "setup": setup,
              "results": results}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"gpu_{shapes}.json").write_text(json.dumps(result, indent=1))
    return result
