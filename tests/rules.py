"""Rule scorers for tests: NaN injected on purpose."""

CALLS = {"n": 0}


def nan_on_second_call(prompts, responses):
    CALLS["n"] += 1
    return [float("nan") if CALLS["n"] == 2 else float(len(r)) for r in responses]


def nan_after_first_call(prompts, responses):
    CALLS["n"] += 1
    return [float("nan") if CALLS["n"] > 1 else float(len(r)) for r in responses]
