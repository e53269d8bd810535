"""Every named experiment composes, and dry-runs with its hub models swapped for tiny ones."""

from pathlib import Path

import pytest
from conftest import REPO, run_cli

from mindprint.assets import path as asset_path
from mindprint.cli import compose
from mindprint.engine.job import execute

PIPELINE = {"voice_demo"}  # experiments of `python -m mindprint.voice`, not of `python -m mindprint.run`
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml") if p.stem not in PIPELINE)


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


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_pipeline_experiment_composes(name, tmp_path):
    paths = {"data.name": "train.jsonl", "data.eval_name": "heldout.jsonl", "reward.path": "reward",
             "eval.style": "style.json",  # the run directory's files, which Hydra's runtime names in a real run
             "model.name": "writer"}  # the demo's writer is built on first use: tests/test_writer.py builds it
    cfg = compose([f"+experiment={name}", f"texts={tmp_path}", *(f"{k}={tmp_path / v}" for k, v in paths.items())],
                  config_name="voice_pipeline")
    assert cfg.texts == str(tmp_path) and cfg.lora.rank == 1 and cfg.ppo.eval_temperature == cfg.ppo.temperature
    assert cfg.voice.opening_tokens < cfg.voice.min_tokens and not cfg.data.apply_chat_template


@pytest.mark.slow
def test_demo_dry_run_cli_prints_the_model_table(tiny):
    proc = run_cli("+experiment=demo", "reward=tiny", "dry_run=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for word in ("policy", "value", "reference", "reward", "14 × Linear8bitLt", "16,384"):
        assert word in proc.stdout, word

