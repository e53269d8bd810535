"""One engine, five algorithms: each learns on the demo, the critic-free ones build no critic, GRPO resumes exactly."""

import math

import pytest
import torch
from conftest import small_trainer
from safetensors.torch import load_file

from mindprint.cli import compose, critic_key_warnings
from mindprint.config import ALGORITHMS, CRITIC_FREE
from mindprint.engine import checkpoint
from mindprint.engine.job import execute
from mindprint.records import read_metrics

TIMING = ("time/", "eps", "perf/")


def mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("algo", CRITIC_FREE)
def test_each_critic_free_algorithm_learns_on_the_demo(tmp_path, tiny, algo):
    """The demo as `make demo` runs it, with the algorithm swapped (PPO's run is test_training's demo_run)."""
    execute(compose(["+experiment=demo", f"algo={algo}", "ppo.eval_every=0"]), tmp_path)
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert len(metrics) == 40 and metrics[-1]["episode"] == 40 * 32  # equal budgets: batch_size counts episodes
    first, last = metrics[:8], metrics[-8:]
    print(f"{algo}: scores {mean(first, 'objective/scores'):.2f} → {mean(last, 'objective/scores'):.2f}, "
          f"KL {mean(last, 'objective/kl'):.2f}, clipfrac {mean(metrics, 'policy/clipfrac_avg'):.2f}")
    # a batch mean of 32 scores spread ~1.8 varies by ~0.3, a mean of 8 such by ~0.1: +0.5 is a clear rise
    assert mean(last, "objective/scores") > mean(first, "objective/scores") + 0.5
    for m in metrics:
        assert all(math.isfinite(v) for k, v in m.items() if isinstance(v, float)), m
        assert "loss/value_avg" not in m and "val/grad_norm" not in m  # no critic
        assert m["health/skipped_updates"] == 0


def test_critic_free_means_no_critic(tmp_path, tiny):
    trainer = small_trainer(tmp_path, "algo=grpo")
    assert trainer.models.value is None and trainer.learner.value is None and trainer.learner.value_params == []
    assert len(trainer.learner.optimizer.param_groups) == 1  # the policy's LoRA alone
    trainer.train(progress=False)
    assert not (tmp_path / "value_model.safetensors").exists()
    prompts = [p.text for p in trainer.prompt_batch()]
    assert prompts[0:4] == [prompts[0]] * 4 and prompts[4:8] == [prompts[4]] * 4  # 2 prompts × G=4 responses
    saved = trainer.checkpoint()
    assert sorted(p.name for p in saved.iterdir()) == ["adapter", "manifest.json", "process-0.pt",
                                                       "trainer_state.pt"]
    checkpoint.verify(saved)


@pytest.mark.slow
def test_grpo_resumes_exactly(tmp_path, tiny):
    run = ["+experiment=smoke", "algo=grpo", "checkpoint.every=2"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    execute(compose([*run, "ppo.steps=4"]), whole)
    execute(compose([*run, "ppo.steps=2"]), split)
    execute(compose([*run, "ppo.steps=4", "resume=true"]), split)
    a = load_file(whole / "adapter" / "adapter_model.safetensors")
    b = load_file(split / "adapter" / "adapter_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith((*TIMING, "eval/"))} for r in rows]  # noqa: E731
    resumed = read_metrics(split / "metrics.jsonl")
    assert strip(resumed) == strip(read_metrics(whole / "metrics.jsonl"))
    # the run's clock goes on from the checkpoint, where this session's eps starts again
    clock = [r["time/elapsed_s"] for r in resumed]
    assert clock == sorted(clock) and clock[2] > clock[1] > 0
    assert checkpoint.load_state(checkpoint.latest(split))["elapsed_s"] >= clock[-1]  # its evaluation, too


def test_a_critic_only_key_with_a_critic_free_algorithm_is_warned_about():
    cfg = compose(["algo=rloo", "ppo.vf_coef=0.3", "lora.value_rank=4"])
    assert critic_key_warnings(cfg, ["algo=rloo", "ppo.vf_coef=0.3", "lora.value_rank=4", "ppo.cliprange=0.1"]) == [
        "warning: ppo.vf_coef has no effect with algo=rloo (it is critic-free: no value model)",
        "warning: lora.value_rank has no effect with algo=rloo (it is critic-free: no value model)",
    ]
    assert critic_key_warnings(compose(["ppo.vf_coef=0.3"]), ["ppo.vf_coef=0.3"]) == []  # PPO reads it


@pytest.mark.parametrize("overrides, message", [
    (["algo=grpo", "algo.group_size=1"], "algo.group_size=1 is not allowed: expected an integer >= 2 with algo=grpo"),
    (["algo=rloo", "algo.group_size=1"], "algo.group_size=1 is not allowed: expected an integer >= 2 with algo=rloo"),
    (["algo=grpo", "ppo.batch_size=30", "ppo.mini_batch_size=10", "ppo.micro_batch_size=10"],
     "ppo.batch_size=30 is not allowed: expected a multiple of algo.group_size=4"),
    (["algo.name=a2c"], "algo.name='a2c' is not allowed: expected one of ppo, grpo, dr_grpo, rloo, reinforce_pp"),
    (["algo.loss_aggregation=seq_sum"], "algo.loss_aggregation='seq_sum' is not allowed"),
])
def test_bad_algorithm_settings_are_one_line(overrides, message):
    from mindprint.errors import one_line

    with pytest.raises(Exception) as info:
        compose(overrides)
    assert one_line(info.value).startswith(message), one_line(info.value)


def test_every_algorithm_has_its_config_and_the_default_is_ppo():
    assert compose([]).algo.name == "ppo" and compose([]).algo.critic
    for name in ALGORITHMS:
        assert compose([f"algo={name}"]).algo.name == name
    grpo = compose(["algo=grpo"]).algo
    assert (grpo.kl_in, grpo.loss_aggregation) == ("loss", "seq_mean_token_mean")
    assert compose(["algo=dr_grpo"]).algo.loss_aggregation == "seq_mean_token_sum_norm"


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_equal_scores_move_no_weight_and_are_counted(tmp_path, tiny, algo):
    """Every response scored alike, no KL term (β = 0): the advantages are exactly 0, so the update is exactly nothing
    (AdamW's step of a zero gradient is 0), and frac_reward_zero_std says why."""
    trainer = small_trainer(tmp_path, f"algo={algo}", "reward.name=null", "reward.rule=rules:constant",
                            "ppo.init_kl_coef=0", "algo.std_eps=0")
    before = [p.detach().clone() for p in trainer.learner.policy_params]
    metrics = trainer.step()
    assert metrics["frac_reward_zero_std"] == 1.0 and metrics["health/skipped_updates"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.learner.policy_params))
