"""A synthetic preference set in a recognisable voice, for the offline voice demo.

The "author" writes plainly and concretely, with a small lexicon of their own (tide, quietly,
notice, plainly, small things...) and a habit of closing on a short reflection. The chosen side
of each pair is in that voice; the rejected side answers the same prompt in generic filler with
none of it. `python -m mindprint.voice OUT.jsonl [N]` writes the set as prompt/chosen/rejected.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from mindprint.assets import path as asset_path

LEXICON = ["the tide", "quietly", "I notice", "plainly", "small things", "the harbour light", "slowly",
           "the old road", "by hand", "in the morning"]
VOICE_OPENINGS = ["I notice {a} first.", "Plainly put, it is {a}.", "{A}, quietly, every time.",
                  "Start with {a}.", "It comes down to {a}."]
VOICE_MIDDLES = ["Then {b}, slowly, and {c}.", "You see {b} and, by hand, {c}.", "There is {b}; there is {c}.",
                 "{B} moves the way the tide does, and {c} follows."]
VOICE_CLOSINGS = ["Small things, noticed plainly.", "That is the whole of it, quietly.",
                  "The tide comes back in the morning.", "Notice it, and stop there."]
GENERIC = ["This is a very interesting topic with many aspects to consider.",
           "There are several important factors that are relevant here.",
           "In general, it depends on a variety of different circumstances.",
           "Many people have different opinions about this subject.",
           "It is important to think about all of the various elements involved.",
           "Overall, there are both advantages and disadvantages to consider.",
           "Generally speaking, this can be seen in many different ways."]
NOUNS = ["the boats", "the bread", "the rain", "the gulls", "the wind", "the soil", "the light", "the street",
         "the bees", "the market", "the river", "the kettle", "the frost", "the ferry", "the garden"]


def voiced(rng: random.Random) -> str:
    a, b, c = rng.sample(NOUNS, 3)
    fill = dict(a=a, A=a.capitalize(), b=b, B=b.capitalize(), c=c)
    lexicon = " ".join(rng.sample(LEXICON, 2)).capitalize() + "."
    parts = [rng.choice(VOICE_OPENINGS), rng.choice(VOICE_MIDDLES), lexicon, rng.choice(VOICE_CLOSINGS)]
    return " ".join(p.format(**fill) for p in parts)


def generic(rng: random.Random) -> str:
    return " ".join(rng.sample(GENERIC, 3))


def synthetic_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n preference pairs over the shipped demo prompts: chosen in the voice, rejected generic."""
    rng = random.Random(seed)
    prompts = [json.loads(line)["prompt"] for line in Path(asset_path("demo_prompts.jsonl")).read_text().splitlines()]
    return [{"prompt": rng.choice(prompts), "chosen": voiced(rng), "rejected": generic(rng)} for _ in range(n)]
