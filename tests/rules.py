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
