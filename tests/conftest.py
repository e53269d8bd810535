"""Offline, CPU, tiny models. Tiny models are built once per machine into a shared cache."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MINDPRINT_TINY_DIR", str(Path(tempfile.gettempdir()) / "mindprint-tiny-tests"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["WANDB_MODE"] = "offline"

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, module: str = "mindprint.run", cwd: Path = REPO, timeout: int = 600, env=None):
    """`python -m mindprint.run ARGS` (or another entry point) as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="session")
def tiny():
    from mindprint.synthetic.tiny import KINDS, ensure_tiny

    return {kind: ensure_tiny(kind) for kind in KINDS}


def small_trainer(run_dir, *overrides):
    """A Trainer on the demo's tiny models: batch 8, minibatch 4, micro-batch 2, two iterations."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from mindprint.cli import compose
    from mindprint.engine.data import load_prompts
    from mindprint.engine.models import build_models
    from mindprint.engine.rewards import build_scorer
    from mindprint.engine.trainer import Trainer

    cfg = compose(["+experiment=smoke", "ppo.micro_batch_size=2", *overrides])
    set_seed(cfg.seed)
    models = build_models(cfg, torch.device("cpu"))
    prompts = load_prompts(cfg.data, models.tokenizer, cfg.seed)
    scorer = build_scorer(cfg.reward, models.reward, models.reward_tokenizer)
    return Trainer(cfg, models, prompts, scorer, run_dir, Accelerator(cpu=True))


def model_variant(source: str, target: Path, **files: dict) -> str:
    """A copy of the model directory `source` with keys changed in its JSON files, e.g.
    `generation_config={"repetition_penalty": 5.0}`; a value of None removes the key."""
    shutil.copytree(source, target)
    for stem, changes in files.items():
        path = target / f"{stem}.json"
        data = json.loads(path.read_text())
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        path.write_text(json.dumps(data, indent=1))
    return str(target)


def max_abs_log_ratio(trainer) -> tuple[float, float]:
    """(max |log ρ|, max |V − V_old|) over real tokens between a rollout and a train-mode forward on its rows:
    both 0 before any update, unless something random (dropout) or a different distribution acts."""
    import torch

    from mindprint.engine.rollout import Timer

    r = trainer.actor.rollout(trainer.sampler.batch(0, 8), Timer())
    trainer.learner.model.train()
    with torch.no_grad():
        logp, _, values = trainer.learner.train_forward(r[torch.arange(8)])
    return (((logp - r.logprobs).abs() * r.mask).max().item(), ((values - r.values).abs() * r.mask).max().item())
