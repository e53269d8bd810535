"""Every named experiment composes, and dry-runs with its hub models swapped for tiny ones."""

from pathlib import Path

import pytest

from conftest import REPO, run_cli
from mindprint.config import asset_path
from mindprint.run import compose, execute

EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))


def test_there_are_experiments():
    assert {"demo", "baseline", "voice"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_dry_runs(name, tiny, tmp_path, capsys):
    cfg = compose([f"+experiment={name}"])
    # Hubs are out of reach: same experiment, tiny stand-ins for its hub models and dataset.
    cfg.model.name = tiny["policy"]
    if cfg.reward.name is not None:
        cfg.reward.name = tiny["reward"]
    if not Path(cfg.data.name).exists():
        cfg.data.name, cfg.data.eval_split = asset_path("demo_prompts.jsonl"), None
    cfg.device, cfg.dry_run = "cpu", True
    execute(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "policy LoRA: r × Σ(in_features + out_features)" in out
    if cfg.reward.name is not None and cfg.reward.quantization == "8bit":
        assert "Linear8bitLt" in out


def test_demo_dry_run_cli_prints_the_model_table(tiny):
    proc = run_cli("+experiment=demo", "reward=tiny", "dry_run=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for word in ("policy", "value", "reference", "reward", "14 × Linear8bitLt", "16,384"):
        assert word in proc.stdout, word


def test_bench_runs_mindprint_on_the_setup_it_gives_trl(tiny, tmp_path):
    """`make bench` compares like with like: the overrides it passes mindprint compose to TRL's setup."""
    from mindprint.bench import SETUP, mindprint_overrides

    overrides = [o for o in mindprint_overrides(SETUP, tiny["classifier"], tmp_path) if not o.startswith("hydra.")]
    cfg = compose(overrides)
    assert (cfg.ppo.batch_size, cfg.ppo.mini_batch_size, cfg.ppo.micro_batch_size) == (32, 8, 8)
    assert (cfg.ppo.ppo_epochs, cfg.ppo.response_length, cfg.lora.rank) == (4, 12, 8)
    assert cfg.reward.name == tiny["classifier"] and cfg.reward.quantization == "none"
    assert not cfg.ppo.adaptive_kl and cfg.lora.target_modules == SETUP["target_modules"]
