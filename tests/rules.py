"""Rule scorers for tests: NaN injected on purpose."""

CALLS = {"n": 0}


def nan_on_second_call(prompts, responses):
    CALLS["n"] += 1
    return [float("nan") if CALLS["n"] == 2 else float(len(r)) for r in responses]


def nan_after_first_call(prompts, responses):
    CALLS["n"] += 1
    return [float("nan") if CALLS["n"] > 1 else float(len(r)) for r in responses]


def length_logged(prompts, responses):
    """Scores = response lengths, each call appended to $SCORE_LOG/rank-$RANK.jsonl (to check aggregation)."""
    import json
    import os
    from pathlib import Path

    scores = [float(len(r)) for r in responses]
    log = Path(os.environ["SCORE_LOG"]) / f"rank-{os.environ.get('RANK', '0')}.jsonl"
    with open(log, "a") as fh:
        fh.write(json.dumps(scores) + "\n")
    return scores


def shorter_is_better(prompts, responses):
    """Score = −len(response)/10: a reward that makes response lengths differ within a batch."""
    return [-len(r) / 10 for r in responses]


def one_score(prompts, responses):
    return [1.0]


def words(prompts, responses):
    return ["good" for _ in responses]


def nothing(prompts, responses):
    return [None for _ in responses]


def raises(prompts, responses):
    raise KeyError("no score for this prompt")


def nan_for_odd_rows(prompts, responses):
    return [float("nan") if i % 2 else 1.0 for i, _ in enumerate(responses)]


def as_tensor(prompts, responses):
    import torch

    return torch.ones(len(responses))


def constant(prompts, responses):
    """The same score for every response: every group of GRPO or RLOO has zero spread."""
    return [0.1 for _ in responses]
