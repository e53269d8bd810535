"""Critic-free estimators and loss aggregation against values worked out by hand, and against
plain-Python re-implementations of the paper formulas."""

import math
import random
import statistics

import pytest
import torch

from mindprint.algorithms import estimators as est
from mindprint.algorithms import ppo


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def lengths_mask(lengths, T):
    return t([[1.0] * n + [0.0] * (T - n) for n in lengths])


# Three prompts × G = 3 responses, contiguous groups.
SCORES_G3 = [1.0, 2.0, 6.0, 4.0, 4.0, 4.0, 0.0, 3.0, 3.0]
# Two prompts × G = 4 responses.
SCORES_G4 = [2.0, 4.0, 6.0, 8.0, 0.0, 1.0, 0.0, 1.0]


# ---------------------------------------------------------------- plain-Python references


def ref_grpo(scores, G, eps, scale, unbiased):
    out = []
    for g in range(0, len(scores), G):
        group = scores[g : g + G]
        mean = sum(group) / G
        std = statistics.stdev(group) if unbiased else statistics.pstdev(group)
        out += [(r - mean) / (std + eps) if scale else r - mean for r in group]
    return out


def ref_rloo(scores, G):
    out = []
    for g in range(0, len(scores), G):
        group = scores[g : g + G]
        for i, r in enumerate(group):
            out.append(r - sum(x for j, x in enumerate(group) if j != i) / (G - 1))
    return out


def ref_returns(rewards, lengths, gamma):
    out = []
    for row, n in zip(rewards, lengths):
        out.append([sum(gamma ** (k - s) * row[k] for k in range(s, n)) if s < n else 0.0 for s in range(len(row))])
    return out


def ref_aggregate(loss, lengths, mode, n_tokens, n_seqs, max_len):
    row_sums = [sum(row[:n]) for row, n in zip(loss, lengths)]
    if mode == "token_mean":
        return sum(row_sums) / n_tokens
    if mode == "seq_mean_token_mean":
        return sum(s / n for s, n in zip(row_sums, lengths)) / n_seqs
    return sum(row_sums) / (n_seqs * max_len)


# ---------------------------------------------------------------- GRPO / Dr. GRPO


def test_grpo_by_hand_three_groups_of_three():
    adv = est.grpo_advantages(t(SCORES_G3), group_size=3)
    # group [1, 2, 6]: mean 3, deviations −2, −1, 3; Σ dev² = 14 → unbiased var 14/2 = 7, std √7 ≈ 2.64575
    # group [4, 4, 4]: deviations 0 → 0/(0 + 1e-4) = 0
    # group [0, 3, 3]: mean 2, deviations −2, 1, 1; Σ dev² = 6 → var 3, std √3 ≈ 1.73205
    s1, s3 = math.sqrt(7) + 1e-4, math.sqrt(3) + 1e-4
    expected = [-2 / s1, -1 / s1, 3 / s1, 0.0, 0.0, 0.0, -2 / s3, 1 / s3, 1 / s3]
    assert adv.tolist() == pytest.approx(expected, rel=1e-12)
    assert adv.tolist()[:3] == pytest.approx([-0.755900, -0.377950, 1.133850], abs=1e-6)
    # biased std (÷G): group 1 √(14/3) ≈ 2.16025, group 3 √(6/3) = √2
    biased = est.grpo_advantages(t(SCORES_G3), 3, unbiased_std=False)
    b1, b3 = math.sqrt(14 / 3) + 1e-4, math.sqrt(2) + 1e-4
    assert biased.tolist() == pytest.approx([-2 / b1, -1 / b1, 3 / b1, 0, 0, 0, -2 / b3, 1 / b3, 1 / b3], rel=1e-12)
    # eps is added to the std, not to the variance: eps = 1 gives −2/(√7 + 1)
    assert est.grpo_advantages(t(SCORES_G3), 3, eps=1.0)[0].item() == pytest.approx(-2 / (math.sqrt(7) + 1))


def test_dr_grpo_is_the_centred_score_by_hand():
    adv = est.grpo_advantages(t(SCORES_G3), group_size=3, scale=False)
    # r − group mean: means 3, 4, 2
    assert adv.tolist() == [-2.0, -1.0, 3.0, 0.0, 0.0, 0.0, -2.0, 1.0, 1.0]
    # G = 4: means 5 and 0.5
    adv4 = est.grpo_advantages(t(SCORES_G4), group_size=4, scale=False)
    assert adv4.tolist() == [-3.0, -1.0, 1.0, 3.0, -0.5, 0.5, -0.5, 0.5]


def test_grpo_g4_by_hand():
    adv = est.grpo_advantages(t(SCORES_G4), group_size=4)
    # [2, 4, 6, 8]: mean 5, dev −3, −1, 1, 3, Σ dev² = 20, var 20/3, std ≈ 2.58199
    # [0, 1, 0, 1]: mean 0.5, dev ±0.5, Σ dev² = 1, var 1/3, std ≈ 0.57735
    s1, s2 = math.sqrt(20 / 3) + 1e-4, math.sqrt(1 / 3) + 1e-4
    expected = [-3 / s1, -1 / s1, 1 / s1, 3 / s1, -0.5 / s2, 0.5 / s2, -0.5 / s2, 0.5 / s2]
    assert adv.tolist() == pytest.approx(expected, rel=1e-12)


def test_equal_scores_give_exactly_zero_in_float32():
    """A group whose scores are all equal moves nothing: its float32 mean rounds (0.1 · 3 / 3 ≠ 0.1), and that
    rounding over a std of ~0 + ε was |Â| up to 2.4e-3 before, a full-sized step once AdamW normalises it."""
    for G in (3, 4, 5):
        for value in (0.1, 0.7, -1.3, 1e4 / 3):
            group = [value] * G
            other = [float(i) for i in range(G)]  # a group with spread beside it keeps its advantages
            scores = torch.tensor(group + other, dtype=torch.float32)
            for eps in (1e-4, 1e-6, 0.0):
                for scale in (True, False):
                    adv = est.grpo_advantages(scores, G, eps=eps, scale=scale)
                    assert adv[:G].tolist() == [0.0] * G and torch.isfinite(adv).all()
                    centred = [x - statistics.mean(other) for x in other]
                    want = [c / (statistics.stdev(other) + eps) for c in centred] if scale else centred
                    assert adv[G:].tolist() == pytest.approx(want, rel=1e-5)
            assert est.rloo_advantages(scores, G)[:G].tolist() == [0.0] * G
    assert est.zero_spread(t([1.0, 1.0, 2.0, 2.0, 2.0, 2.0]), 2).tolist() == [True, True, True]
    assert est.zero_spread(t([1.0, 1.0 + 1e-12, 2.0, 2.0]), 2).tolist() == [False, True]


def test_grpo_matches_plain_python_reference():
    rng = random.Random(0)
    for G, P in ((3, 4), (4, 3), (2, 5)):
        scores = [rng.uniform(-2, 2) for _ in range(G * P)]
        for scale in (True, False):
            for unbiased in (True, False):
                for eps in (1e-4, 1e-6):
                    got = est.grpo_advantages(t(scores), G, eps=eps, scale=scale, unbiased_std=unbiased)
                    assert got.tolist() == pytest.approx(ref_grpo(scores, G, eps, scale, unbiased), rel=1e-10)


# ---------------------------------------------------------------- RLOO


def test_rloo_by_hand():
    adv = est.rloo_advantages(t(SCORES_G3), group_size=3)
    # [1, 2, 6]: 1 − (2+6)/2 = −3; 2 − (1+6)/2 = −1.5; 6 − (1+2)/2 = 4.5
    # [4, 4, 4]: 0; [0, 3, 3]: 0 − 3 = −3; 3 − 1.5 = 1.5; 1.5
    assert adv.tolist() == [-3.0, -1.5, 4.5, 0.0, 0.0, 0.0, -3.0, 1.5, 1.5]
    adv4 = est.rloo_advantages(t(SCORES_G4), group_size=4)
    # [2, 4, 6, 8]: 2 − 18/3 = −4; 4 − 16/3 = −4/3; 6 − 14/3 = 4/3; 8 − 12/3 = 4
    # [0, 1, 0, 1]: 0 − 2/3; 1 − 1/3; …
    assert adv4.tolist() == pytest.approx([-4, -4 / 3, 4 / 3, 4, -2 / 3, 2 / 3, -2 / 3, 2 / 3], rel=1e-12)


def test_rloo_is_rescaled_dr_grpo():
    rng = random.Random(1)
    for G, P in ((2, 3), (3, 4), (4, 2), (5, 2)):
        scores = t([rng.gauss(0, 1) for _ in range(G * P)])
        # Â_i = G/(G−1)·(r_i − mean_g)
        expected = G / (G - 1) * est.grpo_advantages(scores, G, scale=False)
        assert est.rloo_advantages(scores, G).tolist() == pytest.approx(expected.tolist(), rel=1e-12, abs=1e-12)
        assert est.rloo_advantages(scores, G).tolist() == pytest.approx(ref_rloo(scores.tolist(), G), rel=1e-10)


def test_kl_in_score_by_hand_with_different_lengths():
    scores = t([1.0, 2.0, 6.0])
    kl = t([[0.2, 0.4, 0.6], [1.0, 9.0, 9.0], [0.3, 0.5, 9.0]])  # the 9s are padding
    mask = lengths_mask([3, 1, 2], 3)
    shaped = est.sequence_kl_in_score(scores, kl, mask, beta=0.5)
    # Σ KL: 1.2, 1.0, 0.8 → 1 − 0.6 = 0.4; 2 − 0.5 = 1.5; 6 − 0.4 = 5.6
    assert shaped.tolist() == pytest.approx([0.4, 1.5, 5.6], rel=1e-12)
    # then the leave-one-out baseline: 0.4 − (1.5+5.6)/2 = −3.15; 1.5 − (0.4+5.6)/2 = −1.5; 5.6 − 0.95 = 4.65
    assert est.rloo_advantages(shaped, 3).tolist() == pytest.approx([-3.15, -1.5, 4.65], rel=1e-12)
    ref = [s - 0.5 * sum(k[:n]) for s, k, n in zip(scores.tolist(), kl.tolist(), [3, 1, 2])]
    assert shaped.tolist() == pytest.approx(ref, rel=1e-12)


# ---------------------------------------------------------------- returns and REINFORCE++

REWARDS = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [1.0, 0.0, 0.0, 1.0]]
LENGTHS = [3, 2, 4]


def test_discounted_returns_gamma_1_by_hand():
    ret = est.discounted_returns(t(REWARDS), lengths_mask(LENGTHS, 4), gamma=1.0)
    # row 0: 1+2+3, 2+3, 3, pad (its 4 does not leak); row 1: 5+6, 6, pad, pad; row 2: 2, 1, 1, 1
    assert ret.tolist() == [[6.0, 5.0, 3.0, 0.0], [11.0, 6.0, 0.0, 0.0], [2.0, 1.0, 1.0, 1.0]]


def test_discounted_returns_gamma_09_by_hand():
    ret = est.discounted_returns(t(REWARDS), lengths_mask(LENGTHS, 4), gamma=0.9)
    # row 0: G2 = 3; G1 = 2 + 0.9·3 = 4.7; G0 = 1 + 0.9·4.7 = 5.23
    # row 1: G1 = 6; G0 = 5 + 0.9·6 = 10.4
    # row 2: G3 = 1; G2 = 0.9; G1 = 0.81; G0 = 1 + 0.729 = 1.729
    expected = [[5.23, 4.7, 3.0, 0.0], [10.4, 6.0, 0.0, 0.0], [1.729, 0.81, 0.9, 1.0]]
    for got, want in zip(ret.tolist(), expected):
        assert got == pytest.approx(want, rel=1e-12)
    for got, want in zip(ret.tolist(), ref_returns(REWARDS, LENGTHS, 0.9)):
        assert got == pytest.approx(want, rel=1e-12)


def test_discounted_returns_match_reference_on_random_rows():
    rng = random.Random(2)
    T, lengths = 7, [7, 1, 4, 2, 6]
    rewards = [[rng.uniform(-1, 1) for _ in range(T)] for _ in lengths]
    ret = est.discounted_returns(t(rewards), lengths_mask(lengths, T), gamma=0.95)
    for got, want in zip(ret.tolist(), ref_returns(rewards, lengths, 0.95)):
        assert got == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_reinforce_pp_by_hand_one_and_two_processes():
    # token rewards: −β·KL on each real token + score on the last; β = 0.5, KL 2 on row 0's first token
    scores, kl, mask = t([2.0, 2.0]), t([[2.0, 0.0], [0.0, 9.0]]), lengths_mask([2, 1], 2)
    rewards = ppo.token_rewards(scores, kl, mask, kl_coef=0.5)
    assert rewards.tolist() == [[-1.0, 2.0], [2.0, 0.0]]
    # γ = 1 returns: row 0: [1, 2]; row 1: [2, pad]; real values 1, 2, 2: mean 5/3, dev −2/3, 1/3, 1/3,
    # Σ dev² = 2/3
    adv = est.reinforce_pp_advantages(rewards, mask, gamma=1.0)
    # one process: var = (2/3)/(3 − 1) = 1/3 → dev·√3
    r3 = math.sqrt(3)
    assert adv.tolist()[0] == pytest.approx([-2 / 3 * r3, 1 / 3 * r3], rel=1e-6)
    assert adv.tolist()[1] == pytest.approx([1 / 3 * r3, 0.0], rel=1e-6)
    # two identical processes: the same mean, var = (2·2/3)/(6 − 1) = 4/15 → dev·√15/2
    adv2 = est.reinforce_pp_advantages(rewards, mask, gamma=1.0, sum_all=lambda x: 2 * x)
    r15 = math.sqrt(15) / 2
    assert adv2.tolist()[0] == pytest.approx([-2 / 3 * r15, 1 / 3 * r15], rel=1e-6)
    assert adv2.tolist()[1] == pytest.approx([1 / 3 * r15, 0.0], rel=1e-6)
    # and that is the whitening of the batch stacked twice on one process
    stacked = est.reinforce_pp_advantages(torch.cat([rewards, rewards]), torch.cat([mask, mask]), gamma=1.0)
    assert adv2.tolist() == [pytest.approx(row, rel=1e-12) for row in stacked[:2].tolist()]


def test_reinforce_pp_matches_reference_whitening():
    rng = random.Random(3)
    T, lengths = 5, [5, 2, 3, 1]
    rewards = [[rng.uniform(-1, 1) for _ in range(T)] for _ in lengths]
    adv = est.reinforce_pp_advantages(t(rewards), lengths_mask(lengths, T), gamma=0.9)
    real = [x for row, n in zip(ref_returns(rewards, lengths, 0.9), lengths) for x in row[:n]]
    mean, var = statistics.mean(real), statistics.variance(real)
    for row, n, got in zip(ref_returns(rewards, lengths, 0.9), lengths, adv.tolist()):
        want = [(x - mean) / math.sqrt(var + 1e-8) if s < n else 0.0 for s, x in enumerate(row)]
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- per_token and validation


def test_per_token_broadcast_respects_padding():
    adv = est.grpo_advantages(t([1.0, 3.0, 0.0, 0.0]), 2, scale=False)  # [−1, 1, 0, 0]
    out = est.per_token(adv, lengths_mask([3, 1, 2, 3], 3))
    assert out.tolist() == [[-1.0, -1.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert est.per_token(t([2.5, -1.0]), lengths_mask([1, 2], 3)).tolist() == [[2.5, 0, 0], [-1.0, -1.0, 0]]


@pytest.mark.parametrize("fn", [est.grpo_advantages, est.rloo_advantages])
def test_group_validation_names_both_numbers(fn):
    with pytest.raises(ValueError, match=r"(?s)(7.*group_size=3|group_size=3.*7)"):
        fn(t([0.0] * 7), 3)
    with pytest.raises(ValueError, match=r"(?s)(group_size=1.*\b4\b|\b4\b.*group_size=1)"):
        fn(t([0.0] * 4), 1)
    with pytest.raises(ValueError, match="group_size=0"):
        fn(t([0.0] * 4), 0)


# ---------------------------------------------------------------- aggregation

# rows of 3, 1 and 2 real tokens (the 50s are padding); generation limit 4 > T = 3
LOSS = [[1.0, 2.0, 3.0], [4.0, 50.0, 50.0], [6.0, 8.0, 50.0]]
AGG_LENGTHS = [3, 1, 2]


def test_aggregate_each_mode_by_hand():
    loss, mask = t(LOSS), lengths_mask(AGG_LENGTHS, 3)
    # Σ ℓ·m = 6 + 4 + 14 = 24 over 6 tokens
    assert est.aggregate(loss, mask, "token_mean", 6, 3, 4).item() == pytest.approx(24 / 6)
    # per-row token means 6/3 = 2, 4/1 = 4, 14/2 = 7 → (2 + 4 + 7)/3
    assert est.aggregate(loss, mask, "seq_mean_token_mean", 6, 3, 4).item() == pytest.approx(13 / 3)
    # 24/(3 sequences · max_len 4)
    assert est.aggregate(loss, mask, "seq_mean_token_sum_norm", 6, 3, 4).item() == pytest.approx(2.0)
    # normalisers may come as tensors (all-reduced counts)
    assert est.aggregate(loss, mask, "token_mean", t(6.0), t(3.0), 4).item() == pytest.approx(4.0)


@pytest.mark.parametrize("mode", est.AGGREGATIONS)
def test_aggregate_pieces_sum_to_the_whole(mode):
    loss, mask = t(LOSS), lengths_mask(AGG_LENGTHS, 3)
    n_tokens, n_seqs = mask.sum(), 3
    whole = est.aggregate(loss, mask, mode, n_tokens, n_seqs, 4)
    assert whole.item() == pytest.approx(ref_aggregate(LOSS, AGG_LENGTHS, mode, 6, 3, 4), rel=1e-12)
    for split in ([[0], [1], [2]], [[0, 1], [2]], [[0], [1, 2]], [[2, 0], [1]]):
        parts = [est.aggregate(loss[rows], mask[rows], mode, n_tokens, n_seqs, 4) for rows in split]
        assert sum(parts).item() == pytest.approx(whole.item(), rel=1e-12)
    # gradients accumulate the same way
    w = loss.clone().requires_grad_()
    est.aggregate(w, mask, mode, n_tokens, n_seqs, 4).backward()
    acc = torch.zeros_like(loss)
    for rows in ([0], [1, 2]):
        piece = loss[rows].clone().requires_grad_()
        est.aggregate(piece, mask[rows], mode, n_tokens, n_seqs, 4).backward()
        acc[rows] += piece.grad
    assert acc.tolist() == [pytest.approx(row, rel=1e-12) for row in w.grad.tolist()]


def test_local_normalisers_would_not_sum_to_the_whole():
    # why the caller passes the minibatch's counts: a token mean per micro-batch gives 6/3 + 18/3 = 8 ≠ 4
    loss, mask = t(LOSS), lengths_mask(AGG_LENGTHS, 3)
    local = sum(est.aggregate(loss[r], mask[r], "token_mean", mask[r].sum(), len(r), 4) for r in ([0], [1, 2]))
    assert local.item() == pytest.approx(8.0)


def test_aggregate_matches_reference_on_random_batch():
    rng = random.Random(4)
    T, lengths = 6, [6, 1, 3, 5, 2, 4]
    loss = [[rng.uniform(-1, 1) for _ in range(T)] for _ in lengths]
    for mode in est.AGGREGATIONS:
        got = est.aggregate(t(loss), lengths_mask(lengths, T), mode, sum(lengths), len(lengths), 8).item()
        assert got == pytest.approx(ref_aggregate(loss, lengths, mode, sum(lengths), len(lengths), 8), rel=1e-12)


def test_aggregate_unknown_mode_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="token_mean, seq_mean_token_mean, seq_mean_token_sum_norm") as err:
        est.aggregate(t(LOSS), lengths_mask(AGG_LENGTHS, 3), "seq_sum", 6, 3, 4)
    assert "seq_sum" in str(err.value)


# ---------------------------------------------------------------- GRPO's KL in the loss


def test_grpo_kl_penalty_by_hand():
    logp = t([[math.log(0.5), math.log(0.25), -500.0]])
    ref = t([[math.log(0.25), math.log(0.25), 0.0]])
    mask = t([[1.0, 1.0, 0.0]])  # the last position is padding with an extreme log-prob: exp(500) would overflow
    pen = est.grpo_kl_penalty(logp, ref, beta=0.1, mask=mask)
    # token 0: π_ref/π = 0.5 → 0.5 − log 0.5 − 1 = −0.5 + log 2; token 1: ratio 1 → 1 − 0 − 1 = 0; padding: 0
    assert pen.tolist()[0] == pytest.approx([0.1 * (-0.5 + math.log(2)), 0.0, 0.0], abs=1e-15)
    # ∂/∂logp of exp(ref − logp) − (ref − logp) − 1 is 1 − exp(ref − logp): 0.5 at token 0
    logp = logp.clone().requires_grad_()
    est.grpo_kl_penalty(logp, ref, beta=0.1, mask=mask).sum().backward()
    assert logp.grad.tolist()[0] == pytest.approx([0.05, 0.0, 0.0], abs=1e-15)
