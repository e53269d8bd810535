"""Config groups compose into a typed RunConfig; bad input is one line, exit 2, nothing left behind."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

from mindprint.cli import compose
from mindprint.config import ConfigError, LoraConfig, PPOConfig, RunConfig


def test_defaults_compose_to_seed_values():
    cfg = compose([])
    assert isinstance(cfg, RunConfig)
    assert cfg.model.name == "Qwen/Qwen3-0.6B"
    assert cfg.reward.name == "Skywork/Skywork-Reward-V2-Qwen3-8B" and cfg.reward.quantization == "8bit"
    assert cfg.data.name == "trl-lib/tldr" and cfg.data.prompt_field == "prompt"
    assert (cfg.ppo.init_kl_coef, cfg.ppo.target_kl, cfg.ppo.learning_rate) == (0.2, 6.0, 1.41e-5)
    assert cfg.lora.rank == 32 and len(cfg.lora.target_modules) == 7


def test_voice_lora_is_seed_000():
    cfg = compose(["lora=voice"])
    assert (cfg.lora.rank, cfg.lora.alpha) == (1, 1.0)
    assert cfg.lora.target_modules == ["o_proj", "v_proj", "up_proj", "down_proj"]


def test_ppo_default_yaml_mirrors_the_dataclass():
    """conf/ppo/default.yaml lists every PPO key for users to read; the dataclass stays the one source."""
    on_disk = yaml.safe_load((REPO / "conf/ppo/default.yaml").read_text())
    assert on_disk == dataclasses.asdict(PPOConfig())


def test_every_config_group_file_composes():
    groups = [f.name for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(f.default_factory)]
    assert sorted(groups) == sorted(p.name for p in (REPO / "conf").iterdir() if p.name in groups)
    for group in groups:
        for option in sorted((REPO / "conf" / group).glob("*.yaml")):
            if option.stem != "local":  # reward=local needs reward.path: tested in test_voice
                compose([f"{group}={option.stem}"])


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(rank=0), "lora.rank"),
        (dict(dropout=1.5), "lora.dropout"),
    ],
)
def test_lora_value_checks(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        LoraConfig(**kwargs)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["ppo.cliprange=1.5"], "ppo.cliprange"),
        (["ppo.batch_size=10", "ppo.mini_batch_size=4"], "ppo.mini_batch_size"),
        (["ppo.mini_batch_size=16", "ppo.micro_batch_size=5"], "ppo.micro_batch_size"),
        (["ppo.kl_estimator=k2"], "ppo.kl_estimator"),
        (["ppo.kv_cache=paged"], "ppo.kv_cache"),
        (["reward.quantization=3bit"], "reward.quantization"),
    ],
)
def test_value_checks_name_the_key(overrides, key):
    with pytest.raises(Exception) as info:
        compose(overrides)
    from mindprint.errors import one_line

    message = one_line(info.value)
    assert message is not None and message.startswith(key), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("lora.rank=0", "lora.rank=0 is not allowed: expected an integer >= 1"),
        ("lora.rnk=3", "lora.rnk is not a known key (allowed keys: rank, alpha, target_modules"),
        ("ppo.learning_rate=abc", "ppo.learning_rate: Value 'abc' of type 'str' could not be converted to Float"),
        ("model.name=/no/such/model", "model.name='/no/such/model' is not allowed: no such directory"),
        ("reward.quantization=3bit", "reward.quantization='3bit' is not allowed: expected one of 8bit, 4bit, none"),
        ("model=gpt5", "model=gpt5 is not allowed: expected one of"),
    ],
)
def test_bad_override_is_one_line_exit_2_and_leaves_no_run_dir(tmp_path: Path, override, expected):
    run_dir = tmp_path / "run"
    proc = run_cli("+experiment=demo", "dry_run=true", override, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [lines[-1]] and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not run_dir.exists()


def test_a_mistake_leaves_no_outputs_folder_in_a_clean_directory(tmp_path: Path):
    proc = run_cli("lora.rank=0", cwd=tmp_path)  # the default run directory: outputs/runs/DATE/TIME under cwd
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []
