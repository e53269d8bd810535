"""What is sampled and optimised depends only on the knobs the user turned: not on the micro-batch size,
the number of processes, a checkpoint's generation config or dropout rates, nor on hidden defaults."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, max_abs_log_ratio, model_variant, small_trainer
from update_probe import cut

from mindprint.algorithms import ppo
from mindprint.engine.rollout import Timer
from mindprint.engine.update import TokenStats

TIMING = ("time/", "eps", "perf/")


def relative_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """‖a − b‖ / ‖b‖ over a list of tensors taken as one vector."""
    diff = sum((x - y).pow(2).sum() for x, y in zip(a, b, strict=True))
    return (diff / sum(y.pow(2).sum() for y in b)).sqrt().item()


def per_step(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if not k.startswith(TIMING)} for h in history]


def test_micro_batch_size_is_pure_gradient_accumulation(tmp_path, tiny):
    """One minibatch of 8 rows with 1 to 12 real tokens: micro-batches of 1, 2, 4 and 8 give one gradient, and
    `loss/*` is the minibatch's token mean, as worked out from a single forward."""
    trainer = small_trainer(tmp_path, "ppo.mini_batch_size=8")
    learner = trainer.learner
    r = trainer.actor.rollout(trainer.sampler.batch(0, 8), Timer())
    r.mask = cut(r.mask)
    assert len(set(r.mask.sum(1).tolist())) >= 6
    _, adv, returns = trainer.estimate(r)
    with torch.no_grad():  # as after some updates: ratios away from 1, some clipped, a loss away from 0
        gen = torch.Generator().manual_seed(0)
        for p in learner.policy_params:
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    learner.model.train()
    results = {}
    counts = torch.stack([r.mask.sum(), torch.tensor(8.0)])  # the minibatch's real tokens and sequences
    for micro in (1, 2, 4, 8):
        trainer.p.micro_batch_size = micro
        learner.optimizer.zero_grad(set_to_none=True)
        stats = TokenStats()
        assert learner.minibatch_gradients(r, torch.arange(8), adv, returns, counts, 0.05, stats, first=False)
        grads = [p.grad.clone() for p in learner.policy_params + learner.value_params]
        results[micro] = grads, stats.averages(trainer.accelerator)
    whole, logged = results[8]
    for micro, (grads, stats) in results.items():
        assert relative_gap(grads, whole) <= 1e-5, micro
        for key in ("loss/policy_avg", "loss/value_avg"):
            assert stats[key] == pytest.approx(logged[key], rel=1e-5), (micro, key)
    with torch.no_grad():
        logp, _, values = learner.train_forward(r[torch.arange(8)])
    ratio = torch.exp(logp - r.logprobs)
    assert ((ratio - 1).abs() > 0.2).any()
    surrogate = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    assert logged["loss/policy_avg"] == pytest.approx(((surrogate * r.mask).sum() / r.mask.sum()).item(), rel=1e-5)
    clipped = r.values + (values - r.values).clamp(-0.2, 0.2)
    squares = torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    assert logged["loss/value_avg"] == pytest.approx(0.5 * ((squares * r.mask).sum() / r.mask.sum()).item(), rel=1e-5)


def probe(out, processes: int):
    """tests/update_probe.py on `processes` CPU processes (accelerate's torchrun-style launch over gloo)."""
    out.mkdir()
    launch = [sys.executable]
    if processes > 1:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                  str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", "29537"]
    proc = subprocess.run([*launch, str(REPO / "tests" / "update_probe.py"), str(out), "ppo.micro_batch_size=2"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO / "tests")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out / "update.pt")


@pytest.mark.slow
def test_two_processes_make_the_single_process_update(tmp_path, tiny):
    """The same 8 rows (1 to 12 real tokens) on one process, or 4 on each of two: the same whitened advantages,
    the same all-reduced gradient and loss, the same weights after the optimizer step."""
    one, two = probe(tmp_path / "one", 1), probe(tmp_path / "two", 2)
    adv_one = torch.load(tmp_path / "one" / "advantages-0.pt")
    adv_two = torch.cat([torch.load(tmp_path / "two" / f"advantages-{rank}.pt") for rank in (0, 1)])
    torch.testing.assert_close(adv_two, adv_one, rtol=1e-5, atol=1e-6)
    assert relative_gap(two["grads"], one["grads"]) <= 1e-5
    assert relative_gap(two["weights"], one["weights"]) <= 1e-6
    for key in ("loss/policy_avg", "loss/value_avg"):
        assert two["losses"][key] == pytest.approx(one["losses"][key], rel=1e-5), key


@pytest.mark.slow
def test_a_checkpoints_generation_config_cannot_change_sampling(tmp_path, tiny):
    """Fields a checkpoint ships in generation_config.json (Qwen3-0.6B ships temperature, top_k, top_p) would
    reshape sampling while the PPO ratio and KL are computed from the plain logits: they must not act."""
    shipped = model_variant(tiny["policy"], tmp_path / "shipped", generation_config={
        "repetition_penalty": 5.0, "no_repeat_ngram_size": 1, "temperature": 0.6, "top_k": 20, "top_p": 0.95,
        "min_p": 0.2, "suppress_tokens": [5, 6, 7]})
    plain = small_trainer(tmp_path / "a").train(progress=False)
    assert per_step(small_trainer(tmp_path / "b", f"model.name={shipped}").train(progress=False)) == per_step(plain)
    assert "eval/scores" in plain[-1]  # greedy evaluation compared too


def test_dropout_a_checkpoint_ships_is_zero_where_it_acts(tmp_path, tiny):
    """Qwen3Attention copies attention_dropout when built: zeroing the config afterwards would not reach it."""
    dropped = model_variant(tiny["policy"], tmp_path / "dropout", config={"attention_dropout": 0.3})
    trainer = small_trainer(tmp_path / "run", f"model.name={dropped}")
    assert trainer.models.policy.get_base_model().config.attention_dropout == 0.0
    log_ratio, value_gap = max_abs_log_ratio(trainer)
    assert log_ratio <= 1e-5 and value_gap <= 1e-5


def test_reference_copy_is_the_initial_policy_when_a_pad_token_is_added(tmp_path, tiny):
    """A tokenizer without a pad token gets one, and the embeddings a new row: the copy must get the policy's."""
    no_pad = model_variant(tiny["policy"], tmp_path / "no-pad", tokenizer_config={"pad_token": None})
    trainer = small_trainer(tmp_path / "run", f"model.name={no_pad}", "model.reference=copy")
    assert trainer.models.tokenizer.pad_token == "<|pad|>" and len(trainer.models.tokenizer) == 513
    r = trainer.actor.rollout(trainer.sampler.batch(0, 8), Timer())
    assert torch.equal(r.logprobs, r.ref_logprobs)
    with torch.no_grad():
        kl = trainer.actor.exact_kl(r[torch.arange(8)], 1.0)
    assert (kl * r.mask).abs().max().item() == 0.0


def test_no_hidden_optimizer_defaults_and_lr_is_the_rate_each_iteration_used(tmp_path, tiny):
    trainer = small_trainer(tmp_path / "a", "ppo.lr_scheduler=linear")
    assert [g["weight_decay"] for g in trainer.learner.optimizer.param_groups] == [0.0, 0.0]  # torch's default is 0.01
    history = trainer.train(progress=False)
    lr = trainer.p.learning_rate
    assert [h["lr"] for h in history] == pytest.approx([lr, lr / 2])  # linear over 2 iterations: what each used
    decayed = small_trainer(tmp_path / "b", "ppo.weight_decay=0.1")
    assert [g["weight_decay"] for g in decayed.learner.optimizer.param_groups] == [0.1, 0.1]


def test_whitening_statistics_count_every_process_by_hand():
    """Two processes holding the same rows [1, 3]: μ = 2 and σ² = Σ(x − μ)²/(n − 1) = 4/3 over n = 4 tokens."""
    x, mask = torch.tensor([[1.0, 3.0]], dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    both = ppo.masked_whiten(x, mask, sum_all=lambda t: 2 * t)
    assert both[0].tolist() == pytest.approx([-1 / (4 / 3) ** 0.5, 1 / (4 / 3) ** 0.5], rel=1e-6)
    assert ppo.masked_whiten(x, mask)[0].tolist() == pytest.approx([-1 / 2**0.5, 1 / 2**0.5], rel=1e-6)
