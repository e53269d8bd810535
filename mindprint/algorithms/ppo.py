"""The PPO objective of seed 004 as small pure functions on tensors.

Shapes: B episodes × T response tokens. `mask` is 1.0 on real response tokens (up to and
including the first stop token) and 0.0 on padding; every mean here is over real tokens only.

Where a statistic must cover the rows of every process (whitening, loss normalisers), the
function takes `sum_all`: a function summing a tensor over processes (the identity on one).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

SumAll = Callable[[torch.Tensor], torch.Tensor]


def _local(x: torch.Tensor) -> torch.Tensor:
    return x


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean(x | mask) = Σ x·m / Σ m."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, sum_all: SumAll = _local
) -> torch.Tensor:
    """(x − μ)/√(σ² + 1e-8) over real tokens; with shift_mean=False the mean is added back (reward whitening).

    μ = Σ x·m / Σ m and σ² = Σ m·(x − μ)² / (Σ m − 1), each sum over the real tokens of every process
    (`sum_all`), as verl's masked_whiten (unbiased variance, + 1e-8): the statistics do not depend on how many processes
    the batch is split over.
    """
    total, n = sum_all(torch.stack([(x * mask).sum(), mask.sum()]))
    mean = total / n.clamp(min=1)
    var = sum_all(((x - mean) ** 2 * mask).sum()) / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log π(a_t | s_t) = log_softmax(logits_t)[a_t]."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H(π(·|s_t)) = logsumexp(z) − Σ softmax(z)·z, per token."""
    logits = logits.float()
    p = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def kl_exact(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(π‖π_ref) at each visited state, summed over the vocabulary: Σ_v π(v)·(log π(v) − log π_ref(v)).

    Valid however the tokens were chosen (greedy evaluation included), unlike the sampled k1/k3.
    """
    logp, ref_logp = F.log_softmax(logits.float(), -1), F.log_softmax(ref_logits.float(), -1)
    return (logp.exp() * (logp - ref_logp)).sum(-1)


def response_mask(responses: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """1.0 up to and including the first stop token of each row, 0.0 after; by position, never by pad id.

    A row with no stop token is all ones (it ran to the length limit).
    """
    is_stop = torch.isin(responses, torch.tensor(stop_ids, device=responses.device))
    # stops strictly before position t: the cumulative count shifted right by one
    stops_before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    return (stops_before == 0).float()


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from a sample a_t ~ π.

    k1 = log π(a_t) − log π_ref(a_t)                         (unbiased, can be negative)
    k3 = (r − 1) − log r,  r = π_ref(a_t)/π(a_t)              (unbiased, always ≥ 0; Schulman 2020)
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl_estimator={estimator!r}: expected k1 or k3")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = −β·KL_t on every real token, plus the sequence score on the last real token."""
    rewards = -kl_coef * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores), device=scores.device), last] += scores
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation.

    δ_t = r_t + γ·V(s_{t+1}) − V(s_t)   (V after the last real token is 0)
    Â_t = δ_t + γλ·Â_{t+1}
    returns_t = Â_t + V(s_t)
    Padding positions get zero advantage and do not leak into real ones.
    """
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value = values[:, t]
        advantages[:, t] = next_adv
    returns = advantages + values
    return advantages, returns


Reduce = Callable[[torch.Tensor], torch.Tensor]


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    reduce: Optional[Reduce] = None,
    penalty: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate, as a loss to minimise (Schulman et al. 2017, eq. 7).

    ρ_t = exp(log π_θ(a_t) − log π_old(a_t))
    ℓ_t = max(−Â_t·ρ_t, −Â_t·clip(ρ_t, 1 − ε, 1 + ε)) + penalty_t      (penalty: GRPO's β·k3 per token, or none)
    L = reduce(ℓ): the token mean Σ ℓ·m / Σ m by default. The update passes `estimators.aggregate` with the
        normalisers of the whole minibatch over all processes, so micro-batches and processes only
        accumulate the same gradient (a token mean per micro-batch, as TRL 1.12, would weigh a token by
        how many real tokens its micro-batch happens to hold).
    clipfrac = mean_t [clipped term > unclipped term];  approxkl = mean_t ½(log ρ_t)²
    """
    log_ratio = torch.where(mask.bool(), logprobs - old_logprobs, 0.0)  # padding cannot overflow the exp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    per_token = torch.max(unclipped, clipped)
    if penalty is not None:
        per_token = per_token + penalty
    loss = reduce(per_token) if reduce is not None else masked_mean(per_token, mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
    reduce: Optional[Reduce] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss.

    V_clip = V_old + clip(V − V_old, −ε_v, ε_v)
    L = ½·reduce(max((V − R)², (V_clip − R)²))   (reduce: as in `policy_loss`)
    clipfrac = mean_t [(V_clip − R)² > (V − R)²]
    """
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_sq = (values - returns) ** 2
    clipped_sq = (clipped_values - returns) ** 2
    per_token = torch.max(unclipped_sq, clipped_sq)
    loss = 0.5 * (reduce(per_token) if reduce is not None else masked_mean(per_token, mask))
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped_sq > unclipped_sq).float(), mask)}
    return loss, stats


def adaptive_kl_coef(kl_coef: float, kl: float, target: float, n_episodes: int, horizon: int) -> float:
    """Ziegler et al. (2019): e = clip(KL/target − 1, −0.2, 0.2);  β ← β·(1 + e·n/horizon)."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_episodes / horizon)
