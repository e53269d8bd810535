"""The PPO engine on the tiny model: it learns, its invariants hold, its numbers are pinned."""

import json
import math

import pytest
import torch
from conftest import max_abs_log_ratio, run_cli, small_trainer
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from mindprint.cli import compose
from mindprint.config import RewardConfig
from mindprint.engine.data import PromptSampler, load_prompts
from mindprint.engine.job import execute
from mindprint.engine.models import build_reward
from mindprint.engine.rewards import RewardModelScorer, build_scorer
from mindprint.engine.rollout import Timer
from mindprint.records import read_metrics

DESIGN_METRICS = [
    "objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward", "objective/scores",
    "policy/approxkl_avg", "policy/clipfrac_avg", "policy/entropy_avg", "loss/policy_avg", "loss/value_avg",
    "val/clipfrac_avg", "val/ratio", "val/num_eos_tokens", "lr", "episode", "eps", "objective/kl_coef",
    "time/rollout_s", "time/update_s", "perf/tokens_per_s", "env/response_length",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny):
    """The demo experiment exactly as `make demo` runs it."""
    run_dir = tmp_path_factory.mktemp("demo")
    summary = execute(compose(["+experiment=demo"]), run_dir)
    return run_dir, read_metrics(run_dir / "metrics.jsonl"), summary


def mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)


@pytest.mark.slow
def test_it_learns(demo_run):
    _, metrics, _ = demo_run
    assert len(metrics) == 40
    first, last = metrics[:8], metrics[-8:]
    # the tiny reward model's scores spread ~1.8 across responses at the start
    assert mean(last, "objective/scores") > mean(first, "objective/scores") + 1.0
    # healthy PPO: about a fifth of the tokens clipped, the KL held near ppo.target_kl=6 by a β that moves
    assert mean(metrics, "policy/clipfrac_avg") < 0.3
    assert 3.0 < mean(last, "objective/kl") < 12.0
    assert abs(metrics[-1]["objective/kl_coef"] / 0.1 - 1) > 0.1
    assert all(math.isfinite(m["objective/kl"]) for m in metrics)
    assert mean(last, "objective/kl") > 0
    assert all(0.0 <= m["policy/clipfrac_avg"] <= 1.0 and 0.0 <= m["val/clipfrac_avg"] <= 1.0 for m in metrics)
    assert metrics[-1]["eval/scores"] > metrics[9]["eval/scores"] and metrics[-1]["eval/kl"] > 0


@pytest.mark.slow
def test_every_iteration_logs_the_design_metrics(demo_run):
    _, metrics, _ = demo_run
    for m in metrics:
        missing = [k for k in DESIGN_METRICS if k not in m]
        assert not missing, missing
    assert [m["episode"] for m in metrics] == [32 * (i + 1) for i in range(40)]
    assert metrics[0]["objective/kl"] == 0.0  # policy = reference until the first update


@pytest.mark.slow
def test_old_logprobs_match_training_forward_ratio_one_on_first_minibatch(demo_run):
    _, metrics, _ = demo_run
    assert all(m["val/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-5) for m in metrics)


@pytest.mark.slow
def test_adaptive_kl_coef_follows_the_controller(demo_run):
    _, metrics, _ = demo_run
    for prev, cur in zip(metrics, metrics[1:]):
        e = min(max(prev["objective/kl"] / 6.0 - 1.0, -0.2), 0.2)
        assert cur["objective/kl_coef"] == pytest.approx(prev["objective/kl_coef"] * (1 + e * 32 / 320))


@pytest.mark.slow
def test_run_directory_holds_adapter_and_value_weights(demo_run, tiny):
    run_dir, _, _ = demo_run
    base = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    policy = PeftModel.from_pretrained(base, run_dir / "adapter")
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in policy.named_parameters())
    value = load_file(run_dir / "value_model.safetensors")
    assert "score.weight" in value and len(value) > 10  # value model trained fully by default
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {"iteration", "prompt", "response", "score"} <= set(samples[0])


def test_reference_equals_policy_before_update_and_base_weights_never_change(tmp_path, tiny):
    trainer = small_trainer(tmp_path)
    base = {n: p.detach().clone() for n, p in trainer.models.policy.named_parameters() if "lora_" not in n}
    r = trainer.actor.rollout(trainer.sampler.batch(0, 8), Timer())
    assert torch.equal(r.logprobs, r.ref_logprobs)
    trainer.train(progress=False)
    after = dict(trainer.models.policy.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in base.items())
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in after.items())


def test_micro_batches_drop_shared_padding_and_score_as_in_the_full_batch(tmp_path, tiny):
    trainer = small_trainer(tmp_path)
    r = trainer.actor.rollout(trainer.sampler.batch(0, 8), Timer())
    short = r.query_mask.sum(1).argsort()[:2]  # the two shortest prompts: padding columns they share
    rows = r[short]
    input_ids, attention_mask, _ = rows.inputs()
    padded = rows.queries.shape[1] - int(rows.query_mask.sum(1).max())
    assert padded > 0 and input_ids.shape[1] == rows.queries.shape[1] + rows.responses.shape[1] - padded
    assert attention_mask[:, 0].any()
    with torch.no_grad():
        logp, _, values = trainer.learner.train_forward(rows)
    assert torch.allclose(logp, r.logprobs[short], atol=1e-5)
    assert torch.allclose(values, r.values[short], atol=1e-5)


def test_generation_in_rollout_batch_size_chunks_gives_the_same_greedy_responses(tmp_path, tiny):
    whole, chunked = small_trainer(tmp_path / "a"), small_trainer(tmp_path / "b", "ppo.rollout_batch_size=3")
    prompts = whole.sampler.batch(0, 8)
    rows_per_call = []
    generate = chunked.actor.policy.generate
    chunked.actor.policy.generate = lambda **kw: rows_per_call.append(len(kw["input_ids"])) or generate(**kw)
    expected = whole.actor.generate(prompts, temperature=0.0)
    got = chunked.actor.generate(prompts, temperature=0.0)
    assert rows_per_call == [3, 3, 2]
    assert got.queries.shape[0] == len(got) == 8 and got.query_mask.shape == got.queries.shape
    assert torch.equal(got.responses, expected.responses) and torch.equal(got.mask, expected.mask)


def test_chunks_that_stop_early_are_padded_to_the_longest(tmp_path, tiny):
    trainer = small_trainer(tmp_path, "ppo.rollout_batch_size=1", "ppo.response_length=40")
    pad = trainer.models.tokenizer.pad_token_id
    lengths = []
    for it in range(3):
        got = trainer.actor.generate(trainer.sampler.batch(it, 8), temperature=1.0)
        assert got.responses.shape == (8, 40)
        for row, m in zip(got.responses, got.mask):
            lengths.append(int(m.sum()))
            assert (row[lengths[-1]:] == pad).all()
    assert min(lengths) < 40 == max(lengths)  # some one-row chunks stopped early, others ran to the limit


@pytest.mark.slow
def test_a_static_kv_cache_compiles_decoding_once_and_samples_the_current_weights(tmp_path, tiny):
    """ppo.kv_cache=static: transformers compiles the decoding step (on GPUs; here forced onto the CPU), which
    must give the tokens the eager loop gives, stay one graph across prompt lengths, and see weight updates."""
    from torch._dynamo.utils import counters
    from transformers.generation import CompileConfig

    eager, static = small_trainer(tmp_path / "a"), small_trainer(tmp_path / "b", "ppo.kv_cache=static")
    compile_config = CompileConfig()
    compile_config._compile_all_devices = True  # transformers' switch for compiling off-GPU, meant for tests
    static.actor.policy.generation_config.compile_config = compile_config
    graphs = counters["stats"]["unique_graphs"]
    widths = set()
    for it in range(3):
        prompts = eager.sampler.batch(it, 8)
        expected = eager.actor.generate(prompts, temperature=0.0)
        got = static.actor.generate(prompts, temperature=0.0)
        assert torch.equal(got.responses, expected.responses) and torch.equal(got.mask, expected.mask)
        widths.add(expected.queries.shape[1])
        if it == 0:
            before = got.responses
    assert len(widths) > 1 and counters["stats"]["unique_graphs"] == graphs + 1  # compiled once
    # The optimizer updates the weights in place: the compiled step must read them, not a copy taken at compile.
    with torch.no_grad():
        for trainer in (eager, static):
            gen = torch.Generator().manual_seed(0)
            for p in trainer.learner.policy_params:
                p.add_(torch.randn(p.shape, generator=gen))
    prompts = eager.sampler.batch(0, 8)
    after = static.actor.generate(prompts, temperature=0.0).responses
    assert torch.equal(after, eager.actor.generate(prompts, temperature=0.0).responses) and not torch.equal(after, before)


def test_masks_and_missing_eos_penalty(tmp_path, tiny):
    trainer = small_trainer(tmp_path, "ppo.missing_eos_penalty=-3.0")
    r = trainer.actor.rollout(trainer.sampler.batch(0, 8), Timer())
    stops = torch.tensor(trainer.models.stop_ids)
    ended = (torch.isin(r.responses, stops) & r.mask.bool()).any(1)
    assert (r.scores[~ended] == -3.0).all()
    # after the first stop everything is padding, masked out by position
    for row, m in zip(r.responses, r.mask):
        n = int(m.sum())
        assert (row[n:] == trainer.models.tokenizer.pad_token_id).all()


GOLDEN = {  # first two iterations of small_trainer() on CPU, seed 0 (regenerate only for an intended change)
    1: {"loss/policy_avg": -0.08397732, "loss/value_avg": 4.03802061, "objective/scores": -1.49754095,
        "objective/kl": 0.0},
    2: {"loss/policy_avg": -0.06331748, "loss/value_avg": 1.21661699, "objective/scores": -0.86007178,
        "objective/kl": 0.01006565},
}


def assert_golden(history: list[dict]) -> None:
    for it, expected in GOLDEN.items():
        for k, v in expected.items():
            assert history[it - 1][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (it, k)


def test_golden_first_iterations(tmp_path, tiny):
    assert_golden(small_trainer(tmp_path).train(progress=False))


@pytest.mark.slow
def test_gradient_checkpointing_keeps_the_numbers(tmp_path, tiny, recwarn):
    trainer = small_trainer(tmp_path, "model.gradient_checkpointing=true")
    assert not [w for w in recwarn if "gradient_checkpointing_enable" in str(w.message)]  # renamed in transformers 5
    assert trainer.models.policy.is_gradient_checkpointing and trainer.models.value.is_gradient_checkpointing
    assert_golden(trainer.train(progress=False))


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path, tiny):
    a = small_trainer(tmp_path / "a").train(progress=False)
    b = small_trainer(tmp_path / "b").train(progress=False)
    timing = ("time/", "eps", "perf/")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(timing)} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)


def test_reward_model_with_its_own_tokenizer_scores_as_when_called_directly(tiny):
    model, tok = build_reward(RewardConfig(name=tiny["reward"], quantization="none"), torch.device("cpu"),
                              torch.float32)
    policy_tok = AutoTokenizer.from_pretrained(tiny["policy"])
    assert len(tok) != len(policy_tok) and tok("the harbour")["input_ids"] != policy_tok("the harbour")["input_ids"]
    prompts = ["Describe the harbour at dawn.", "Why?", "Tell me about a storm at sea, please, in detail."]
    responses = ["Boats knock against the pier.", "Because the tide turns and the gulls argue.", ""]
    scores = RewardModelScorer(model, tok, batch_size=2, max_length=512)(prompts, responses)
    direct = AutoModelForSequenceClassification.from_pretrained(tiny["reward"]).eval()
    for p, r, s in zip(prompts, responses, scores):
        text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                       tokenize=False)
        with torch.no_grad():
            expected = direct(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0]
        assert s.item() == pytest.approx(expected.item(), abs=1e-5)


def test_topics_get_steps_per_topic_iterations_each(tiny):
    cfg = compose(["+experiment=demo"])
    prompts = load_prompts(cfg.data, AutoTokenizer.from_pretrained(tiny["policy"]), seed=0)
    sampler = PromptSampler(prompts.train, steps_per_topic=3, shuffle=True, seed=0)
    topics = [{p.topic for p in sampler.batch(i, 4)} for i in range(9)]
    assert [t.pop() for t in topics] == ["sea"] * 3 + ["city"] * 3 + ["garden"] * 3


@pytest.mark.slow
def test_cli_run_writes_metrics_and_artifacts(tmp_path, tiny):
    run_dir = tmp_path / "run"
    proc = run_cli("+experiment=smoke", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 2
    assert (run_dir / "adapter" / "adapter_config.json").exists()
    assert "run summary" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.1 < summary["peak_rss_gib"] < 8  # host memory (Linux), printed with the summary
    assert f"peak host memory {summary['peak_rss_gib']:.2f} GiB" in proc.stdout


def test_rule_scorer_and_a_bad_rule():
    from mindprint.config import ConfigError
    from mindprint.engine.rewards import load_rule
    from mindprint.synthetic.rules import vowel_share

    scorer = build_scorer(RewardConfig(name=None, rule="mindprint.synthetic.rules:vowel_share"), None, None)
    assert scorer(["p", "p", "p"], ["aei", "bcd", "a1b2"]).tolist() == [1.0, 0.0, 0.5]
    assert vowel_share(["p"], ["!!"]) == [0.0]
    assert RewardConfig(name=None, rule="mindprint.rewards:vowel_share").rule == "mindprint.synthetic.rules:vowel_share"
    with pytest.raises(ConfigError, match="reward.rule='mindprint.engine.rewards:nope'"):
        load_rule("mindprint.engine.rewards:nope")


def test_ratio_is_one_at_a_sampling_temperature_below_one(tmp_path, tiny):
    """Old log-probs and training log-probs both come from logits/temperature (at 1.0 a mismatch would hide):
    the largest |log ρ| over real tokens, not a mean where errors of opposite sign cancel."""
    log_ratio, value_gap = max_abs_log_ratio(small_trainer(tmp_path, "ppo.temperature=0.7"))
    assert log_ratio <= 1e-5 and value_gap <= 1e-5
