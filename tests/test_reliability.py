"""Exact resume after SIGKILL, checkpoint on SIGTERM, NaN guards, bad input, export and merge."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rules
import torch
from conftest import REPO, run_cli
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from mindprint.cli import compose
from mindprint.config import ConfigError
from mindprint.engine import checkpoint
from mindprint.engine.job import execute
from mindprint.errors import TrainingStopped
from mindprint.export import main as export_main
from mindprint.records import read_metrics

pytestmark = pytest.mark.slow  # multi-process launches, full CLI runs

TINY_RUN = ["+experiment=smoke"]
TIMING = ("time/", "eps", "perf/")


def popen(*args):
    return subprocess.Popen([sys.executable, "-m", "mindprint.run", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def per_step(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith(TIMING)} for m in read_metrics(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, tiny):
    run_dir = tmp_path_factory.mktemp("unbroken") / "run"
    proc = run_cli(*TINY_RUN, "ppo.steps=10", "checkpoint.every=3", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def test_resume_after_sigkill_is_exact(unbroken, tmp_path):
    run_dir = tmp_path / "run"
    proc = popen(*TINY_RUN, "ppo.steps=10", "checkpoint.every=3", f"hydra.run.dir={run_dir}")
    wait_for(lambda: (run_dir / "checkpoints" / "iter-000003" / checkpoint.STATE).exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.latest(run_dir)
    assert killed_at is not None and killed_at.name < "iter-000010", "the run finished before it was killed"
    resumed = run_cli(*TINY_RUN, "ppo.steps=10", "checkpoint.every=3", f"hydra.run.dir={run_dir}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout

    a = load_file(unbroken / "adapter" / "adapter_model.safetensors")
    b = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"resume equivalence: max abs adapter weight difference = {max_diff:.3e}")
    assert max_diff <= 1e-6
    assert per_step(run_dir) == per_step(unbroken)  # no step twice, none lost, same numbers
    va, vb = load_file(unbroken / "value_model.safetensors"), load_file(run_dir / "value_model.safetensors")
    assert max((va[k] - vb[k]).abs().max().item() for k in va) <= 1e-6


def test_sigterm_checkpoints_at_a_safe_point_and_says_how_to_resume(tmp_path, tiny):
    run_dir = tmp_path / "run"
    proc = popen(*TINY_RUN, "ppo.steps=200", "checkpoint.every=0", f"hydra.run.dir={run_dir}")
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted by SIGTERM" in err and "resume=true" in err and f"hydra.run.dir={run_dir}" in err
    saved = checkpoint.latest(run_dir)
    assert saved is not None
    state = checkpoint.load_state(saved)
    assert state["iteration"] == len(read_metrics(metrics))  # checkpointed right after the last logged step


def run_with_rule(tmp_path, rule, steps, every=1):
    rules.CALLS["n"] = 0
    cfg = compose([*TINY_RUN, f"ppo.steps={steps}", f"checkpoint.every={every}", "ppo.max_bad_updates=3",
                   "reward.name=null", f"reward.rule=rules:{rule}"])
    return execute(cfg, tmp_path)


def test_a_nan_reward_skips_that_update_and_the_run_goes_on(tmp_path, tiny):
    summary = run_with_rule(tmp_path, "nan_on_second_call", steps=4)
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert [m["health/skipped_updates"] for m in metrics] == [0, 1, 1, 1]
    assert metrics[1]["objective/scores"] is None  # NaN is written as null, the JSON stays valid
    assert summary["episodes"] == 32
    for ckpt in checkpoint.checkpoint_dirs(tmp_path):
        assert checkpoint.all_finite(load_file(ckpt / "adapter" / "adapter_model.safetensors"))


def test_repeated_nan_stops_with_a_clear_error_and_the_last_good_checkpoint(tmp_path, tiny):
    with pytest.raises(TrainingStopped, match=r"3 updates in a row had NaN.*last good checkpoint: .*iter-000001"):
        run_with_rule(tmp_path, "nan_after_first_call", steps=10)
    (good,) = checkpoint.checkpoint_dirs(tmp_path)
    assert checkpoint.all_finite(load_file(good / "adapter" / "adapter_model.safetensors"))
    assert checkpoint.all_finite(checkpoint.load_value_weights(good))


def bad(tmp_path, *overrides) -> str:
    with pytest.raises(ConfigError) as info:
        execute(compose([*TINY_RUN, "ppo.steps=1", *overrides]), tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_inputs_get_one_line_naming_the_value(tmp_path, tiny):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "fine"}\n{"prompt": oops\n')
    nofield = tmp_path / "questions.jsonl"
    nofield.write_text('{"question": "what?"}\n')
    cases = {
        "reward.name=/no/such/reward": "reward.name='/no/such/reward' is not allowed: no such directory",
        f"reward.name={tiny['policy']}": "is a Qwen3ForCausalLM, expected a sequence classifier",
        "data.prompt_field=question": "data.prompt_field='question' is not allowed: not a column",
        f"data.name={broken}": f"data.name='{broken}' could not be loaded",
        f"data.name={nofield}": "data.prompt_field='prompt' is not allowed: not a column",
        "data.max_prompt_length=2": "no usable prompt left (48 empty or longer than data.max_prompt_length=2",
        "lora.target_modules=[c_attn]": "lora.target_modules=['c_attn'] is not allowed: not in the model",
        "resume=true": "resume=true is not allowed: no checkpoint in",
    }
    for override, expected in cases.items():
        message = bad(tmp_path, override)
        assert expected in message, (override, message)
        print(f"{override}\n  → error: {message}")


def test_resume_with_a_different_config_names_the_keys(unbroken):
    with pytest.raises(ConfigError, match=r"different config \(lora.rank: 8 → 4; ppo.cliprange: 0.2 → 0.3\)"):
        execute(compose([*TINY_RUN, "ppo.steps=10", "lora.rank=4", "ppo.cliprange=0.3", "resume=true"]), unbroken)


def test_a_finished_run_directory_is_not_overwritten(unbroken):
    with pytest.raises(ConfigError, match="already holds a run; add resume=true"):
        execute(compose([*TINY_RUN, "ppo.steps=10"]), unbroken)


def test_export_adapter_and_merged_model_give_the_same_logits(unbroken, tmp_path, tiny):
    export_main([str(unbroken), str(tmp_path / "adapter")])
    export_main([str(unbroken), str(tmp_path / "merged"), "--merge"])
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250]])
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny["policy"]), tmp_path / "adapter")
        expected = adapted(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny["policy"])(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(input_ids=ids).logits
    assert not torch.allclose(expected, base)  # the adapter changed something
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-4)
    assert not any("lora" in k for k in load_file(tmp_path / "merged" / "model.safetensors"))
    assert (tmp_path / "merged" / "tokenizer.json").exists()


def test_export_without_an_adapter_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        export_main([str(tmp_path), str(tmp_path / "out")])
    assert info.value.code == 2 and capsys.readouterr().err.startswith("error: RUN_DIR=")
    assert not (tmp_path / "out").exists()
