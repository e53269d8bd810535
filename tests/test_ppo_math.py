"""Each PPO function against values worked out by hand."""

import math

import pytest
import torch

from mindprint.algorithms import ppo


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_gae_gamma_1_lambda_095_by_hand():
    rewards, values, mask = t([[0.0, 0.0, 1.0]]), t([[0.5, 0.6, 0.7]]), t([[1.0, 1.0, 1.0]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # δ2 = 1 − 0.7 = 0.3; δ1 = 0.7 − 0.6 = 0.1; δ0 = 0.6 − 0.5 = 0.1
    # A2 = 0.3; A1 = 0.1 + 0.95·0.3 = 0.385; A0 = 0.1 + 0.95·0.385 = 0.46575
    assert adv.tolist()[0] == pytest.approx([0.46575, 0.385, 0.3])
    assert ret.tolist()[0] == pytest.approx([0.96575, 0.985, 1.0])


def test_gae_ignores_padding_values_and_rewards():
    rewards, values, mask = t([[0.0, 1.0, 5.0]]), t([[0.5, 0.6, 9.0]]), t([[1.0, 1.0, 0.0]])
    adv, _ = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # the last real token bootstraps from 0, not from the padding's value 9
    assert adv.tolist()[0] == pytest.approx([0.1 + 0.95 * 0.4, 0.4, 0.0])


def test_clipped_surrogate_and_clipfrac_by_hand():
    old = t([[0.0, 0.0, 0.0]])
    new = t([[math.log(1.5), math.log(0.5), math.log(1.1)]])
    adv, mask = t([[1.0, 1.0, -2.0]]), t([[1.0, 1.0, 1.0]])
    loss, stats = ppo.policy_loss(new, old, adv, mask, cliprange=0.2)
    # token 0: max(−1.5, −1.2) = −1.2 (clipped); token 1: max(−0.5, −0.8) = −0.5; token 2: 2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 3
    assert stats["approxkl"].item() == pytest.approx(expected_kl)
    assert stats["ratio"].item() == pytest.approx((1.5 + 0.5 + 1.1) / 3)


def test_policy_loss_ignores_padding():
    old, new = t([[0.0, 0.0]]), t([[0.0, 3.0]])
    loss, stats = ppo.policy_loss(new, old, t([[1.0, 100.0]]), t([[1.0, 0.0]]), cliprange=0.2)
    assert loss.item() == pytest.approx(-1.0)
    assert stats["clipfrac"].item() == 0.0


def test_value_clipping_by_hand():
    values, old, returns, mask = t([[0.5, 0.1]]), t([[0.0, 0.0]]), t([[1.0, -1.0]]), t([[1.0, 1.0]])
    loss, stats = ppo.value_loss(values, old, returns, mask, cliprange_value=0.2)
    # token 0: V_clip = 0.2 → max(0.25, 0.64) = 0.64 (clipped); token 1: 1.21 either way
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21) / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)


def test_kl_estimators_k1_k3_by_hand():
    logp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    assert ppo.kl_per_token(logp, ref, "k1").item() == pytest.approx(math.log(2))
    # r = π_ref/π = 0.5 → (r − 1) − log r = −0.5 + log 2
    assert ppo.kl_per_token(logp, ref, "k3").item() == pytest.approx(-0.5 + math.log(2))
    with pytest.raises(ValueError, match="k2"):
        ppo.kl_per_token(logp, ref, "k2")


def test_k3_is_nonnegative_and_k1_k3_unbiased_for_kl():
    torch.manual_seed(0)
    p, q = torch.softmax(torch.randn(8), 0), torch.softmax(torch.randn(8), 0)
    exact = (p * (p / q).log()).sum().item()
    samples = torch.multinomial(p, 200_000, replacement=True)
    logp, logq = p.log()[samples], q.log()[samples]
    k3 = ppo.kl_per_token(logp, logq, "k3")
    assert (k3 >= 0).all()
    assert ppo.kl_per_token(logp, logq, "k1").mean().item() == pytest.approx(exact, rel=0.03)
    assert k3.mean().item() == pytest.approx(exact, rel=0.03)
    assert ppo.kl_exact(torch.log(p)[None], torch.log(q)[None]).item() == pytest.approx(exact, rel=1e-5)


def test_adaptive_kl_update_by_hand():
    # e = clip(9/6 − 1, −0.2, 0.2) = 0.2 → β·(1 + 0.2·64/10000)
    assert ppo.adaptive_kl_coef(0.2, 9.0, 6.0, 64, 10000) == pytest.approx(0.2 * 1.00128)
    assert ppo.adaptive_kl_coef(0.2, 3.0, 6.0, 64, 10000) == pytest.approx(0.2 * (1 - 0.00128))
    assert ppo.adaptive_kl_coef(0.2, 6.6, 6.0, 64, 10000) == pytest.approx(0.2 * (1 + 0.1 * 64 / 10000))


def test_eos_cut_and_masking_by_position():
    responses = torch.tensor([[5, 2, 7, 0], [5, 6, 7, 8], [0, 9, 9, 9], [5, 0, 2, 9]])
    mask = ppo.response_mask(responses, stop_ids=[2, 0])  # Qwen3 has two stop ids
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]


def test_token_rewards_put_score_on_last_real_token():
    scores = t([1.0, 2.0])
    kl, mask = t([[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]]), t([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards = ppo.token_rewards(scores, kl, mask, kl_coef=0.5)
    torch.testing.assert_close(rewards, t([[-0.05, 0.9, 0.0], [-0.05, -0.05, 1.95]]))


def test_masked_whiten_uses_real_tokens_only():
    x, mask = t([[1.0, 3.0, 100.0]]), t([[1.0, 1.0, 0.0]])
    w = ppo.masked_whiten(x, mask)
    assert w[0, :2].tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)], rel=1e-6)
    assert w[0, 2].item() == 0.0
    assert ppo.masked_whiten(x, mask, shift_mean=False)[0, :2].tolist() == pytest.approx(
        [2 - 1 / math.sqrt(2), 2 + 1 / math.sqrt(2)], rel=1e-6
    )


def test_losses_reduced_over_a_minibatch_normaliser_by_hand():
    """Rows of 2 and 1 real tokens: with the whole minibatch's 3 tokens as normaliser, each row's share sums to
    the minibatch's token mean, however the rows are split (a token mean per row would give 1.5 + 4)."""
    from functools import partial

    from mindprint.algorithms.estimators import aggregate

    mask = t([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    reduce = partial(aggregate, mode="token_mean", n_tokens=t(3.0), n_seqs=t(2.0), max_len=3)
    old, adv = t([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), t([[1.0, 1.0, 9.0], [-2.0, 9.0, 9.0]])
    new = t([[math.log(1.5), 0.0, 0.0], [0.0, 0.0, 0.0]])
    loss, _ = ppo.policy_loss(new, old, adv, mask, cliprange=0.2, reduce=lambda x: reduce(x, mask))
    # token 0: max(−1.5, −1.2) = −1.2; token 1: −1; token 3: 2 → (−1.2 − 1 + 2)/3
    assert loss.item() == pytest.approx(-0.2 / 3)
    rows = [ppo.policy_loss(new[i:i + 1], old[i:i + 1], adv[i:i + 1], mask[i:i + 1], 0.2,
                            reduce=lambda x, i=i: reduce(x, mask[i:i + 1]))[0].item() for i in (0, 1)]
    assert rows == pytest.approx([-2.2 / 3, 2 / 3]) and sum(rows) == pytest.approx(loss.item())
    penalised, _ = ppo.policy_loss(new, old, adv, mask, 0.2, penalty=t([[0.3, 0.3, 5.0], [0.3, 5.0, 5.0]]))
    assert penalised.item() == pytest.approx((-1.2 - 1 + 2 + 0.9) / 3)  # default: the batch's token mean
    values, returns = t([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), t([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    vloss, _ = ppo.value_loss(values, values, returns, mask, cliprange_value=0.2, reduce=lambda x: reduce(x, mask))
    assert vloss.item() == pytest.approx(0.5 * (1 + 0 + 4) / 3)
