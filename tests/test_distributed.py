"""Data-parallel training with accelerate: two CPU processes over gloo on the tiny models."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO
from safetensors.torch import load_file

from mindprint.engine import checkpoint
from mindprint.records import read_metrics

pytestmark = pytest.mark.slow  # multi-process launches, full CLI runs

TINY_RUN = ["+experiment=smoke", "device=cpu"]


def launch(*args, processes=2, env=None):
    """`accelerate launch` with torchrun-style workers: on a machine without GPUs they train on CPU over gloo."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
           "-m", "mindprint.run", *TINY_RUN, *args]
    if processes == 1:
        cmd = [sys.executable, "-m", "mindprint.run", *TINY_RUN, *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_processes_double_the_episodes_and_agree_on_metrics(tmp_path, tiny):
    scores_dir = tmp_path / "scores"
    scores_dir.mkdir()
    run_dir = tmp_path / "run"
    launch("ppo.steps=3", "reward.name=null", "reward.rule=rules:length_logged", f"hydra.run.dir={run_dir}",
           env={"SCORE_LOG": str(scores_dir), "PYTHONPATH": str(REPO / "tests")})
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [1, 2, 3]  # written once per iteration, by the main process
    assert [m["episode"] for m in metrics] == [16, 32, 48]  # 2 processes × ppo.batch_size=8
    per_rank = [[json.loads(line) for line in (scores_dir / f"rank-{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    for i, m in enumerate(metrics):
        both = per_rank[0][i] + per_rank[1][i]  # what the two processes scored in iteration i + 1
        assert m["objective/scores"] == pytest.approx(sum(both) / len(both), rel=1e-6)
    assert per_rank[0][0] != per_rank[1][0]  # the processes rolled out different prompts and samples


def test_resume_with_two_processes_is_exact(tmp_path, tiny):
    whole, split = tmp_path / "whole", tmp_path / "split"
    launch("ppo.steps=4", "checkpoint.every=2", f"hydra.run.dir={whole}")
    launch("ppo.steps=2", "checkpoint.every=2", f"hydra.run.dir={split}")
    assert sorted(p.name for p in (checkpoint.latest(split)).iterdir()) == [
        "adapter", "manifest.json", "process-0.pt", "process-1.pt", "trainer_state.pt", "value_model.safetensors"]
    launch("ppo.steps=4", "checkpoint.every=2", f"hydra.run.dir={split}", "resume=true")
    a = load_file(whole / "adapter" / "adapter_model.safetensors")
    b = load_file(split / "adapter" / "adapter_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    timing = ("time/", "eps", "perf/", "eval/")  # the 2-step run also evaluated at its end
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(timing)} for r in rows]  # noqa: E731
    assert strip(read_metrics(split / "metrics.jsonl")) == strip(read_metrics(whole / "metrics.jsonl"))


def deepspeed(config, *args, check: bool = True):
    """`accelerate launch --config_file CONFIG`: DeepSpeed on two CPU processes over gloo."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
           "--main_process_port", "29535", "-m", "mindprint.run", *TINY_RUN, "checkpoint.every=2", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DS_ACCELERATOR": "cpu"})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def zero3_sharding_everything(tmp_path):
    """conf/accelerate/zero3.yaml's setup, but every tensor sharded: by default ZeRO-3 keeps tensors under
    1e5 elements whole on each process, which is all of the tiny models' tensors."""
    ds = tmp_path / "zero3.json"
    ds.write_text(json.dumps({
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
        **{key: "auto" for key in ("train_micro_batch_size_per_gpu", "train_batch_size",
                                   "gradient_accumulation_steps", "gradient_clipping")},
    }))
    shipped = yaml.safe_load((REPO / "conf" / "accelerate" / "zero3.yaml").read_text())
    shipped.pop("mixed_precision")  # accelerate refuses it beside a DeepSpeed config file
    shipped["deepspeed_config"] = {"deepspeed_config_file": str(ds), "zero3_init_flag": False}
    config = tmp_path / "zero3.yaml"
    config.write_text(yaml.safe_dump(shipped))
    return config


def weight_gap(a_dir, b_dir) -> float:
    """The largest difference between two runs' saved weights, relative to each tensor's largest weight."""
    gaps = []
    for name in ("adapter/adapter_model.safetensors", "value_model.safetensors"):
        a, b = load_file(a_dir / name), load_file(b_dir / name)
        gaps += [((a[k] - b[k]).abs().max() / a[k].abs().max().clamp(min=1e-12)).item() for k in a]
    return max(gaps)


def test_deepspeed_zero3_trains_as_zero2_does_and_both_resume_exactly(tmp_path, tiny):
    """Sharding changes where tensors live, not the math; a run stopped and resumed ends bit-identical."""
    zero2, zero3 = REPO / "conf" / "accelerate" / "zero2.yaml", zero3_sharding_everything(tmp_path)
    runs = {}
    for name, config in (("z2", zero2), ("z3", zero3)):
        whole, split = tmp_path / f"{name}-whole", tmp_path / f"{name}-split"
        deepspeed(config, "ppo.steps=4", f"hydra.run.dir={whole}")
        deepspeed(config, "ppo.steps=2", f"hydra.run.dir={split}")
        deepspeed(config, "ppo.steps=4", f"hydra.run.dir={split}", "resume=true")
        runs[name] = whole
        # resumed = uninterrupted, each process having reloaded its own optimizer shard
        parts = [checkpoint.load_state(checkpoint.latest(split), f"process-{r}.pt")["optimizer"] for r in (0, 1)]
        assert all(part is not None for part in parts)
        assert weight_gap(whole, split) == 0.0, name
        timing = ("time/", "eps", "perf/", "eval/")
        strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(timing)} for r in rows]  # noqa: E731
        assert strip(read_metrics(split / "metrics.jsonl")) == strip(read_metrics(whole / "metrics.jsonl")), name
    m2, m3 = read_metrics(runs["z2"] / "metrics.jsonl"), read_metrics(runs["z3"] / "metrics.jsonl")
    assert [m["episode"] for m in m3] == [16, 32, 48, 64]  # 2 processes × ppo.batch_size=8
    assert all(m["grad_norm"] > 0 and m["health/skipped_updates"] == 0 for m in m3)  # DeepSpeed's global norm
    assert m3[-1]["objective/kl"] > 0  # the policy moved away from the reference
    for key in ("objective/scores", "objective/kl", "loss/value_avg", "grad_norm"):
        assert [m[key] for m in m3] == pytest.approx([m[key] for m in m2], rel=1e-4, abs=1e-6), key
    # Adam turns float noise in the sharded reductions into ~1e-5 steps on weights of ~0.2-1: relative, as above
    assert weight_gap(runs["z2"], runs["z3"]) <= 1e-4
    # saved whole although every tensor was sharded: the value model's embedding has its full shape
    assert load_file(runs["z3"] / "value_model.safetensors")["model.embed_tokens.weight"].shape == (512, 64)


def one_error_line(proc) -> str:
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]  # said once, not once per process
    return errors[0]


def test_deepspeed_refusals_are_one_line(tmp_path, tiny):
    zero2 = REPO / "conf" / "accelerate" / "zero2.yaml"
    run_dir = tmp_path / "run"
    proc = deepspeed(zero2, "ppo.micro_batch_size=2", f"hydra.run.dir={run_dir}", check=False)
    assert one_error_line(proc) == (
        "error: ppo.micro_batch_size=2 is not allowed under DeepSpeed: expected ppo.mini_batch_size=4 (one backward "
        "per optimizer step; save memory with ZeRO-3 or model.gradient_checkpointing=true instead)")
    assert not run_dir.exists()  # nothing half-written
    proc = deepspeed(zero3_sharding_everything(tmp_path), "ppo.kv_cache=static", f"hydra.run.dir={run_dir}", check=False)
    assert one_error_line(proc) == (
        "error: ppo.kv_cache='static' is not allowed under ZeRO-3: expected 'dynamic' (each rollout gathers the "
        "sharded weights anew, so a compiled decoding step cannot keep them)")
    assert not run_dir.exists()
    # a ZeRO-2 checkpoint holds sharded optimizer state: resuming it under DDP is refused by name
    deepspeed(zero2, "ppo.steps=2", f"hydra.run.dir={run_dir}")
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29536", "-m", "mindprint.run",
         *TINY_RUN, "checkpoint.every=2", "ppo.steps=4", f"hydra.run.dir={run_dir}", "resume=true"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert one_error_line(proc) == (
        "error: resume=true is not allowed with DDP or a single process: iter-000002 was written under DeepSpeed "
        "ZeRO-2 (its optimizer state loads under the same one)")
