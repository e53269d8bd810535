"""A reward model trained by `mindprint.train_reward` (TRL RewardTrainer) on templated synthetic pairs in a voice, and
PPO against it: the reward-model path of the voice pipeline, small enough to run in seconds."""

import json

import pytest
from conftest import run_cli

from mindprint.cli import compose
from mindprint.config import ConfigError, PairsConfig
from mindprint.engine.job import execute
from mindprint.records import read_metrics
from mindprint.synthetic.pairs import LEXICON, synthetic_pairs
from mindprint.train_reward import load_pairs


def test_synthetic_pairs_carry_the_voice_on_the_chosen_side_only():
    pairs = synthetic_pairs(200, seed=0)
    assert pairs == synthetic_pairs(200, seed=0)  # deterministic
    has_voice = lambda text: any(word in text.lower() for word in LEXICON)  # noqa: E731
    assert all(has_voice(p["chosen"]) and not has_voice(p["rejected"]) for p in pairs)


@pytest.fixture(scope="module")
def voice_rm(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("voice")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in synthetic_pairs(400, seed=0)))
    proc = run_cli("model=tiny", f"pairs.name={pairs}", "device=cpu", "training.learning_rate=1e-3",
                   "training.batch_size=16", f"hydra.run.dir={root / 'reward'}", module="mindprint.train_reward")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "reward"


@pytest.mark.slow
def test_voice_reward_model_separates_held_out_pairs(voice_rm):
    result = json.loads((voice_rm / "eval.json").read_text())
    assert result["pairs"] == 100
    assert result["accuracy"] >= 0.9 and result["margin"] > 0
    assert (voice_rm / "model" / "config.json").exists() and (voice_rm / "model" / "tokenizer.json").exists()


@pytest.mark.slow
def test_ppo_against_the_voice_reward_model_raises_its_score(voice_rm, tmp_path):
    cfg = compose(["+experiment=demo", "reward=local", f"reward.path={voice_rm / 'model'}", "reward.quantization=8bit",
                   "ppo.steps=24", "ppo.eval_every=0"])
    assert cfg.reward.name == str(voice_rm / "model") and cfg.reward.quantization == "8bit"
    execute(cfg, tmp_path)
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    first = sum(m["objective/scores"] for m in metrics[:5]) / 5
    last = sum(m["objective/scores"] for m in metrics[-5:]) / 5
    assert last > first + 0.5, (first, last)


def test_malformed_preference_file_names_the_missing_column(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text("".join(json.dumps({"prompt": "p", "chosen": "c", "loser": "r"}) + "\n" for _ in range(5)))
    with pytest.raises(ConfigError, match=r"it has no 'rejected' column \(columns: prompt, chosen, loser"):
        load_pairs(PairsConfig(name=str(bad), eval_size=1), seed=0)


@pytest.mark.slow
def test_malformed_preference_file_from_the_cli_is_one_line_exit_2(tmp_path, tiny):
    bad = tmp_path / "pairs.csv"
    bad.write_text("prompt,chosen\np,c\n")
    proc = run_cli("model=tiny", f"pairs.name={bad}", f"hydra.run.dir={tmp_path / 'run'}",
                   module="mindprint.train_reward")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: pairs.name='{bad}' is not allowed: it has no 'rejected' column (columns: prompt, chosen; "
        "expected prompt, chosen, rejected)"
    ]


def test_reward_local_needs_a_path():
    with pytest.raises(Exception, match="reward.path"):
        compose(["+experiment=demo", "reward=local"])
