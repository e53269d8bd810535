"""The console is ours on every machine: a library that logs while being imported never reaches it.

tests/noisy/sitecustomize.py makes every installed library that an entry point imports log a warning through its
own loggers as it is imported, as bitsandbytes and `kernels` do on CPUs with AVX512-BF16. So these tests do not
depend on the CPU they run on, nor on which library of the locked set logs at import today.
"""

import os

import pytest
from conftest import REPO, run_cli

pytestmark = pytest.mark.slow  # multi-process launches, full CLI runs


def noisy_env(log):
    return {**os.environ, "PYTHONPATH": f"{REPO / 'tests' / 'noisy'}:{REPO / 'tests'}", "NOISY_LOG": str(log)}


def test_a_dry_run_prints_nothing_on_stderr_although_libraries_log_at_import(tmp_path, tiny):
    log = tmp_path / "imported.txt"
    proc = run_cli("+experiment=demo", "dry_run=true", env=noisy_env(log))
    assert proc.returncode == 0, proc.stderr[-2000:]
    injected = set(log.read_text().split())
    assert {"bitsandbytes", "transformers", "torch", "datasets", "peft", "accelerate"} <= injected
    assert len(injected) > 30  # every installed library of the import chain, not a list of known ones
    assert proc.stderr == ""
    assert "14 × Linear8bitLt" in proc.stdout


def test_a_training_run_prints_only_mindprints_lines(tmp_path, tiny):
    """Libraries imported only once training starts (DeepSpeed, through accelerate, announces its accelerator while
    being imported, on stdout) stay off both streams."""
    proc = run_cli("+experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}", env=noisy_env(tmp_path / "imported.txt"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""
    foreign = [ln for ln in proc.stdout.splitlines() if "injected" in ln or "WARNING" in ln or "INFO" in ln]
    assert foreign == [] and "run summary" in proc.stdout
    assert "deepspeed" in (tmp_path / "imported.txt").read_text().split()


@pytest.mark.parametrize("module, args", [
    ("mindprint.run", ["+experiment=demo", "dry_run=true", "reward.name=/no/such/reward"]),
    ("mindprint.run", ["lora.rank=0"]),
    ("mindprint.run", ["+experiment=smoke", "reward.name=null", "reward.rule=rules:one_score"]),  # found in iteration 1
    ("mindprint.train_reward", ["model=tiny", "pairs.name=/no/such/pairs.jsonl"]),
    ("mindprint.export", ["/no/such/run", "/tmp/mindprint-never-written"]),
    ("mindprint.compare", ["/no/such/sweep"]),
    ("mindprint.bench", ["gpu", "--precisions", "3bit", "--no-trl"]),
    ("mindprint.voice", ["texts=/no/such/folder"]),
])
def test_every_entry_point_answers_a_mistake_in_one_line(tmp_path, tiny, module, args):
    hydra_dir = [f"hydra.run.dir={tmp_path / 'run'}"] if module in ("mindprint.run", "mindprint.train_reward", "mindprint.voice") \
        else []
    proc = run_cli(*args, *hydra_dir, module=module, env=noisy_env(tmp_path / "imported.txt"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_the_noise_injection_spares_what_the_console_spares():
    import importlib.util

    from mindprint import console

    spec = importlib.util.spec_from_file_location("noisy", REPO / "tests" / "noisy" / "sitecustomize.py")
    noisy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noisy)  # injects nothing: NOISY_LOG is unset here
    assert noisy.SPEAKING == console.SPEAKING and noisy.OWN_NAMES == console.OWN_NAMES
