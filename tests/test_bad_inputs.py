"""Inputs found wrong by trying them: each is a one-line error naming the bad value, or is handled correctly."""

import pytest
import torch
from conftest import model_variant
from transformers import get_scheduler

from mindprint.cli import compose
from mindprint.config import LR_SCHEDULERS, ConfigError
from mindprint.engine.job import execute
from mindprint.records import read_metrics

SMOKE = ["+experiment=smoke"]


def refused(tmp_path, *overrides) -> str:
    with pytest.raises(ConfigError) as info:
        execute(compose([*SMOKE, *overrides]), tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message
    print(f"{' '.join(overrides)}\n  → error: {message}")
    return message


@pytest.mark.parametrize("rule, expected", [
    ("one_score", "reward.rule='rules:one_score' is not allowed: it returned 1 scores for 8 responses"),
    ("words", "reward.rule='rules:words' is not allowed: it returned 'good' (str), expected a real number"),
    ("nothing", "reward.rule='rules:nothing' is not allowed: it returned None (NoneType), expected a real number"),
    ("raises", "reward.rule='rules:raises' is not allowed: it raised KeyError: 'no score for this prompt'"),
])
def test_a_rule_that_returns_the_wrong_thing_is_named(tmp_path, tiny, rule, expected):
    assert refused(tmp_path, "reward.name=null", f"reward.rule=rules:{rule}").startswith(expected)


@pytest.mark.slow
def test_a_rule_may_return_a_tensor_and_its_nan_rows_skip_the_update(tmp_path, tiny):
    execute(compose([*SMOKE, "reward.name=null", "reward.rule=rules:as_tensor"]), tmp_path / "tensor")
    execute(compose([*SMOKE, "reward.name=null", "reward.rule=rules:nan_for_odd_rows"]), tmp_path / "nan")
    metrics = read_metrics(tmp_path / "nan" / "metrics.jsonl")
    assert [m["health/skipped_updates"] for m in metrics] == [1, 2]  # counted, the run goes on


def test_a_reward_model_with_more_than_one_label_is_refused(tmp_path, tiny):
    two = model_variant(tiny["reward"], tmp_path / "two-labels", config={"id2label": {"0": "bad", "1": "good"},
                                                                         "label2id": {"bad": 0, "good": 1}})
    assert refused(tmp_path, f"reward.name={two}") == (
        f"reward.name='{two}' is not allowed: it has 2 labels, expected a reward model with one (num_labels=1)")


@pytest.mark.parametrize("content, expected", [("", "the file is empty"), ("\n  \n", "the file holds no rows")])
def test_an_empty_prompt_file_says_so(tmp_path, tiny, content, expected):
    data = tmp_path / "prompts.jsonl"
    data.write_text(content)
    assert refused(tmp_path, f"data.name={data}") == f"data.name='{data}' is not allowed: {expected}"


def test_every_allowed_lr_scheduler_builds_and_others_are_refused():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    for name in LR_SCHEDULERS:  # each needs nothing beyond what the loop gives it
        get_scheduler(name, opt, num_warmup_steps=0, num_training_steps=10).step()
    with pytest.raises(Exception) as info:
        compose(["ppo.lr_scheduler=nonsense"])
    from mindprint.errors import one_line

    assert one_line(info.value) == ("ppo.lr_scheduler='nonsense' is not allowed: expected one of constant, linear, "
                                    "cosine, cosine_with_restarts, polynomial, inverse_sqrt")


def test_a_prompt_file_that_is_not_utf8_names_the_first_bad_byte(tmp_path, tiny):
    prompts = tmp_path / "latin1.jsonl"
    prompts.write_bytes('{"prompt": "a plain line"}\n{"prompt": "café au lait"}\n'.encode("latin-1"))
    message = refused(tmp_path, f"data.name={prompts}", "data.topic_field=null")
    assert message == (f"data.name='{prompts}' is not allowed: it is not UTF-8 text (byte 0xe9 at line 2, column 16); "
                       "save it as UTF-8")
    assert not (tmp_path / "run").exists()


def test_prompts_that_are_numbers_are_named_as_not_text(tmp_path, tiny):
    prompts = tmp_path / "numbers.jsonl"
    prompts.write_text("".join(f'{{"prompt": {n}}}\n' for n in range(12)))
    assert refused(tmp_path, f"data.name={prompts}", "data.topic_field=null") == (
        f"data.prompt_field='prompt' is not allowed: its values in {prompts} are not text (int, e.g. 0; 12 of 12 rows)")


def test_a_response_beyond_the_models_positions_is_refused(tmp_path, tiny):
    assert refused(tmp_path, "ppo.response_length=1224") == (
        f"ppo.response_length=1224 is not allowed: with data.max_prompt_length=64 a sequence reaches 1288 positions, "
        f"and {tiny['policy']} has max_position_embeddings=1024 (expected the two to sum to at most 1024)")
