"""Critic-free advantage estimators (GRPO, Dr. GRPO, RLOO, REINFORCE++) and loss aggregation modes.

Shapes as in `ppo`: B episodes × T response tokens, `mask` 1.0 on real response tokens (the stop token
included) and 0.0 on padding. Group estimators take a batch of B = P·G episodes holding P prompts with
G responses each, contiguous: rows [g·G, (g+1)·G) are one prompt's group. Groups never span processes
(each process rolls out whole groups), so group statistics are local; batch-wide statistics
(REINFORCE++ whitening) take `sum_all` as in `ppo.masked_whiten`.
"""

from __future__ import annotations

from typing import Optional

import torch

from mindprint.algorithms import ppo
from mindprint.algorithms.ppo import SumAll, _local
from mindprint.config import AGGREGATIONS, AlgoConfig, PPOConfig


def _grouped(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """scores[B] viewed as [P, G]; ValueError unless G ≥ 2 and G divides B."""
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape [B], got {tuple(scores.shape)}")
    batch = scores.shape[0]
    if group_size < 2:
        raise ValueError(
            f"group_size={group_size} with a batch of {batch} episodes: "
            "a group baseline needs at least 2 responses per prompt"
        )
    if batch % group_size != 0:
        raise ValueError(f"a batch of {batch} episodes is not a multiple of group_size={group_size}")
    return scores.view(batch // group_size, group_size)


def zero_spread(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """[P] bool: True for each group whose G values are all equal (max − min is exactly 0, never a rounding)."""
    grouped = _grouped(scores, group_size)
    return grouped.amax(dim=1) == grouped.amin(dim=1)


def grpo_advantages(
    scores: torch.Tensor, group_size: int, eps: float = 1e-4, scale: bool = True, unbiased_std: bool = True
) -> torch.Tensor:
    """Group-relative advantage, one value per sequence (GRPO outcome supervision).

    Â_i = (r_i − mean_g(r)) / (std_g(r) + ε)          scale=True:  GRPO (Shao et al. 2024, DeepSeekMath,
                                                        arXiv:2402.03300, §4.1.2)
    Â_i = r_i − mean_g(r)                              scale=False: Dr. GRPO (Liu et al. 2025, "Understanding
                                                        R1-Zero-Like Training", arXiv:2503.20783)
    mean_g, std_g over the G responses of r_i's prompt; std_g = √(Σ_j (r_j − mean_g)² / (G − 1)).

    Conventions (peers differ): the unbiased std (G − 1; `unbiased_std=False` divides by G) and ε = 1e-4
    added to the std, not under the square root, are TRL 1.16's choices; OpenRLHF and verl use other ε
    (`eps`, 0 allowed). A group whose scores are all equal gets Â = 0 exactly (`zero_spread`): in float32 its
    mean rounds, and the rounding divided by a std of ~0 + ε would be an update like any other once AdamW
    normalises it. G ≥ 2 is required (ValueError otherwise, and when G does not divide B).
    """
    grouped = _grouped(scores, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        std = grouped.std(dim=1, keepdim=True, unbiased=unbiased_std)
        centred = centred / (std + eps)
    return torch.where(zero_spread(scores, group_size).unsqueeze(1), 0.0, centred).reshape(-1)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantage, one value per sequence.

    Â_i = r_i − (1/(G − 1))·Σ_{j≠i} r_j  =  G/(G − 1)·(r_i − mean_g(r))
    (Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from
    Human Feedback in LLMs", arXiv:2402.14740). G ≥ 2 is required: a response of its own has no
    other to form a baseline (ValueError, and when G does not divide B). A group whose scores are all equal
    gets Â = 0 exactly (`zero_spread`), not the float32 rounding of the leave-one-out sums.
    """
    grouped = _grouped(scores, group_size)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return torch.where(zero_spread(scores, group_size).unsqueeze(1), 0.0, grouped - others).reshape(-1)


def sequence_kl_in_score(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Sequence reward with the KL penalty folded in, before the baseline: r_i − β·Σ_t KL_{i,t}·m_{i,t}.

    RLOO's KL-in-the-reward (Ahmadian et al. 2024, arXiv:2402.14740; as TRL's RLOOTrainer): the KL of
    the whole sequence, summed (not averaged) over its real tokens, so longer drifts cost more. `kl` is
    any per-token estimate (`ppo.kl_per_token`, k1 or k3); padding does not count.
    """
    return scores - beta * (kl * mask).sum(dim=1)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = Σ_{k≥t} γ^{k−t}·r_k·m_k, i.e. G_t = (r_t + γ·G_{t+1})·m_t with G after the last token 0.

    Padding positions get 0 and their rewards do not leak into real tokens.
    """
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


def reinforce_pp_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float, sum_all: SumAll = _local
) -> torch.Tensor:
    """REINFORCE++ (Hu 2025, arXiv:2501.03262): whitened token returns, no critic and no group baseline.

    Â_t = whiten(G_t),  G_t = Σ_{k≥t} γ^{k−t}·r_k  (`discounted_returns`)
    `rewards` are per-token rewards, the score on the last real token and −β·KL on every token
    (`ppo.token_rewards`). whiten is `ppo.masked_whiten`: (G − μ)/√(σ² + 1e-8), μ and σ² over the real
    tokens of the whole batch on every process (`sum_all`); padding gets 0. The statistics are verl's
    (`masked_whiten`: unbiased variance, + 1e-8 under the square root); OpenRLHF's REINFORCE++ takes the biased
    variance and rsqrt(max(σ², 1e-8)), which differs by ~1/(2N) relative on N tokens (~0.02 on a small batch).
    """
    return ppo.masked_whiten(discounted_returns(rewards, mask, gamma), mask, sum_all=sum_all)


def per_token(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Â_{i,t} = Â_i·m_{i,t}: one value per sequence on each of its real tokens, 0 on padding."""
    return advantages.unsqueeze(1) * mask


def aggregate(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    n_tokens,
    n_seqs,
    max_len: int,
) -> torch.Tensor:
    """Reduce a per-token loss ℓ[B, T] to a scalar; L_i = Σ_t m_{i,t}.

    token_mean               Σ_{i,t} ℓ·m / N_tokens
    seq_mean_token_mean      Σ_i (Σ_t ℓ_{i,t}·m_{i,t} / L_i) / N_seqs   (GRPO, Shao et al. 2024,
                             arXiv:2402.03300, eq. 3: 1/G Σ_i 1/|o_i| Σ_t)
    seq_mean_token_sum_norm  Σ_{i,t} ℓ·m / (N_seqs·max_len)             (Dr. GRPO, Liu et al. 2025,
                             arXiv:2503.20783: a constant normaliser; TRL's loss_type="dr_grpo")

    N_tokens and N_seqs are the real tokens and sequences of the whole minibatch over all processes,
    passed in by the caller, and `max_len` is the generation limit (a constant, not this batch's T): each
    mode is then a sum of per-row terms over one fixed normaliser, so the sum of `aggregate` over the
    micro-batches and processes of a minibatch equals `aggregate` over the whole, and gradient
    accumulation changes nothing (OpenRLHF's normalisation, as `ppo.token_sum_over`). A row with no real
    token contributes 0 (L_i is clamped at 1); normalisers are clamped at 1.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"loss aggregation {mode!r} is not known (allowed: {', '.join(AGGREGATIONS)})")

    def as_t(n) -> torch.Tensor:
        return torch.as_tensor(n, dtype=per_token_loss.dtype, device=per_token_loss.device).clamp(min=1)

    row_sums = torch.where(mask.bool(), per_token_loss, 0.0).sum(dim=1)  # padding cannot bring NaN in
    if mode == "token_mean":
        return row_sums.sum() / as_t(n_tokens)
    if mode == "seq_mean_token_mean":
        return (row_sums / mask.sum(dim=1).clamp(min=1)).sum() / as_t(n_seqs)
    return row_sums.sum() / (as_t(n_seqs) * max_len)


def grpo_kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, beta: float,
                    mask: torch.Tensor) -> torch.Tensor:
    """β·D_KL per real token (0 on padding), added to the per-token loss (KL in the loss, not in the reward).

    D_KL = π_ref/π_θ − log(π_ref/π_θ) − 1 = exp(ref − logp) − (ref − logp) − 1
    (GRPO, Shao et al. 2024, arXiv:2402.03300, eq. 4; Schulman 2020's k3, `ppo.kl_per_token(..., "k3")`).
    Differentiable in `logprobs`. Padding positions are set equal before the exp, so a padding token's
    extreme log-prob cannot overflow into Inf (and Inf·0 into NaN).
    """
    real = mask.bool()
    return beta * ppo.kl_per_token(torch.where(real, logprobs, ref_logprobs), ref_logprobs, "k3") * mask


def estimate(
    algo: AlgoConfig,
    p: PPOConfig,
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: Optional[torch.Tensor],
    mask: torch.Tensor,
    kl_coef: float,
    sum_all: SumAll = _local,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(per-token KL, advantages[B, T], returns for the value model or None): the estimator `algo.name` picks.

    KL_t is `ppo.kl_estimator`'s estimate (k1 or k3) on real tokens. With algo.kl_in=reward, β·KL enters the
    reward: per token for ppo and reinforce_pp (`ppo.token_rewards`), as −β·Σ_t KL_t on the score before the
    group baseline for grpo, dr_grpo and rloo (`sequence_kl_in_score`). With kl_in=loss, the update adds
    β·k3 per token to the policy loss instead (`grpo_kl_penalty`), and the rewards hold the score alone.

    ppo           GAE(γ, λ) on r_t with the values, then whitened over the batch; returns = Â + V
    reinforce_pp  whitened discounted returns of r_t (`reinforce_pp_advantages`)
    grpo          (r − mean_g)/(std_g + ε) on every token (`grpo_advantages`);  dr_grpo: without the std
    rloo          r_i − mean_{j≠i} r_j on every token (`rloo_advantages`)
    """
    kl = ppo.kl_per_token(logprobs, ref_logprobs, p.kl_estimator) * mask
    beta = kl_coef if algo.kl_in == "reward" else 0.0
    if algo.name in ("ppo", "reinforce_pp"):
        rewards = ppo.token_rewards(scores, kl, mask, beta)
        if p.whiten_rewards:
            rewards = ppo.masked_whiten(rewards, mask, shift_mean=False, sum_all=sum_all)
        if algo.name == "reinforce_pp":
            return kl, reinforce_pp_advantages(rewards, mask, p.gamma, sum_all), None
        adv, returns = ppo.gae(rewards, values, mask, p.gamma, p.lam)
        return kl, ppo.masked_whiten(adv, mask, sum_all=sum_all), returns
    sequence = sequence_kl_in_score(scores, kl, mask, beta)
    if algo.name == "rloo":
        return kl, per_token(rloo_advantages(sequence, algo.group_size), mask), None
    adv = grpo_advantages(sequence, algo.group_size, algo.std_eps, scale=algo.name == "grpo",
                          unbiased_std=algo.unbiased_std)
    return kl, per_token(adv, mask), None
