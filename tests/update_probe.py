"""One PPO update on fixed rows, under however many processes `accelerate launch` starts.

Every process rolls out the same 8 prompts with the same seed, cuts the responses to lengths that differ
from row to row, and keeps its own share of the rows (all 8 on one process, 4 each on two). It then
computes advantages (whitened over all processes) and accumulates one minibatch's gradient over its rows.
Each process writes its advantages; process 0 also writes the all-reduced gradients, the logged loss and
the weights after one optimizer step. tests/test_objective.py compares one process with two.

    python tests/update_probe.py OUT_DIR OVERRIDES...
"""

import dataclasses
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from mindprint.cli import compose
from mindprint.engine import distributed
from mindprint.engine.data import load_prompts
from mindprint.engine.models import build_models
from mindprint.engine.rewards import build_scorer
from mindprint.engine.rollout import Rollout, Timer
from mindprint.engine.trainer import Trainer
from mindprint.engine.update import TokenStats

LENGTHS = [12, 3, 7, 1, 12, 5, 9, 2]  # real tokens per row after the cut (response_length 12)


def cut(mask: torch.Tensor) -> torch.Tensor:
    """Each row's mask cut to LENGTHS: causal attention makes the kept positions' numbers exact."""
    keep = torch.arange(mask.shape[1])[None] < torch.tensor(LENGTHS)[:, None]
    return mask * keep


def rows_of(r: Rollout, idx: torch.Tensor) -> Rollout:
    """The rollout of the rows `idx` only."""
    tensors = {f.name: getattr(r, f.name)[idx] for f in dataclasses.fields(r) if f.name not in ("prompts", "texts")}
    return Rollout(prompts=[r.prompts[i] for i in idx], texts=[r.texts[i] for i in idx], **tensors)


def main() -> None:
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    cfg = compose(["+experiment=demo", "reward.name=null", "reward.rule=rules:shorter_is_better", "ppo.steps=1",
                   f"ppo.batch_size={8 // world}", f"ppo.mini_batch_size={8 // world}", *overrides])
    set_seed(cfg.seed)  # the same models on every process
    models = build_models(cfg, accelerator.device)
    prompts = load_prompts(cfg.data, models.tokenizer, cfg.seed)
    trainer = Trainer(cfg, models, prompts, build_scorer(cfg.reward, None, None), out, accelerator)
    torch.manual_seed(0)  # the same samples on every process
    full = trainer.actor.rollout(prompts.train[:8], Timer())
    full.mask = cut(full.mask)
    mine = torch.arange(rank * 8 // world, (rank + 1) * 8 // world)
    r = rows_of(full, mine)
    _, adv, returns = trainer.estimate(r)
    learner = trainer.learner
    torch.save(adv, out / f"advantages-{rank}.pt")
    with torch.no_grad():  # the same change on every process, as after some updates: ratios away from 1
        gen = torch.Generator().manual_seed(0)
        for p in learner.policy_params:
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    learner.model.train()
    stats = TokenStats()
    counts = distributed.sum_all(accelerator, torch.stack([r.mask.sum(), torch.tensor(float(len(mine)))]))
    assert learner.minibatch_gradients(r, torch.arange(len(mine)), adv, returns, counts, trainer.kl_coef, stats,
                                       first=False)
    grads = [p.grad.clone() for p in learner.policy_params + learner.value_params]
    losses = stats.averages(accelerator)
    learner.clip_gradients()
    learner.step_optimizer()
    if rank == 0:
        weights = [p.detach().clone() for p in learner.policy_params + learner.value_params]
        torch.save({"grads": grads, "weights": weights, "losses": losses}, out / "update.pt")
    accelerator.end_training()


if __name__ == "__main__":
    main()
