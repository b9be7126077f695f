"""AGREE's losses against hand-computed values, masks and the hardest-negative choice."""

import math

import pytest
import torch

from agree_core import losses


def sp(x):
    return math.log1p(math.exp(x))


def test_late_interaction_scores_ignore_padding_on_both_sides():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # third token padded
    d = torch.tensor([[[0.6, 0.8], [1.0, 0.0], [9.0, 9.0]]])  # third vector padded
    s = losses.late_interaction_scores(q, torch.tensor([[1, 1, 0]]).bool(), d, torch.tensor([[1, 1, 0]]).bool())
    assert s.item() == pytest.approx(1.0 + 0.8)


def test_late_interaction_scores_match_the_search_maxsim():
    from agree_core.scoring import maxsim

    torch.manual_seed(0)
    qs = [torch.nn.functional.normalize(torch.randn(n, 8), dim=-1) for n in (3, 5)]
    ds = [torch.nn.functional.normalize(torch.randn(n, 8), dim=-1) for n in (4, 7, 2)]
    qp, qm = torch.nn.utils.rnn.pad_sequence(qs, batch_first=True), torch.tensor([[1] * 3 + [0] * 2, [1] * 5]).bool()
    dp = torch.nn.utils.rnn.pad_sequence(ds, batch_first=True)
    dm = torch.arange(7)[None] < torch.tensor([4, 7, 2])[:, None]
    ours = losses.late_interaction_scores(qp, qm, dp, dm)
    assert torch.allclose(ours, maxsim(qs, ds), atol=2e-2)  # maxsim computes in bf16 on such CPUs


def test_hardest_negative_is_the_highest_scoring_non_positive():
    s = torch.tensor([[2.0, 1.5, 3.0, 0.0], [0.0, 1.0, 4.0, 0.5]])
    loss = losses.hardest_negative_softplus(s, torch.tensor([0, 2]))
    assert loss.item() == pytest.approx((sp(3.0 - 2.0) + sp(1.0 - 4.0)) / 2)
    # gradient: only the positive and the hardest negative of each query get one
    s.requires_grad_(True)
    losses.hardest_negative_softplus(s, torch.tensor([0, 2])).backward()
    assert (s.grad != 0).tolist() == [[True, False, True, False], [False, True, True, False]]


def test_excluded_pages_are_never_negatives():
    s = torch.tensor([[2.0, 9.0, 1.0]])
    ex = torch.tensor([[False, True, False]])  # page 1 is the same page as the positive
    assert losses.hardest_negative_softplus(s, torch.tensor([0]), ex).item() == pytest.approx(sp(-1.0))
    with pytest.raises(ValueError, match="no negative"):
        losses.hardest_negative_softplus(torch.tensor([[1.0, 2.0]]), torch.tensor([0]), torch.tensor([[False, True]]))


def test_info_nce_with_temperature_and_exclusion():
    s = torch.tensor([[1.0, 0.5, 0.9]])
    t = 0.1
    want = -math.log(math.exp(1.0 / t) / (math.exp(1.0 / t) + math.exp(0.5 / t)))
    got = losses.info_nce(s, torch.tensor([0]), temperature=t, exclude=torch.tensor([[False, False, True]]))
    assert got.item() == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        losses.info_nce(s, torch.tensor([0]), temperature=0)


def test_patch_relevance_is_the_mean_over_real_query_tokens():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    qm = torch.tensor([[True, True, False], [True, True, True]])
    d = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [-1.0, 0.0]]])
    assert losses.patch_relevance(q, qm, d).tolist() == [[0.5, 0.5], [0.5, -1.0]]


def test_cosine_local_loss_uses_masked_positions_only():
    s = torch.tensor([[0.2, 0.8, -5.0]])
    a = torch.tensor([[1.0, 4.0, 0.0]])
    m = torch.tensor([[True, True, False]])
    cos = (0.2 * 1 + 0.8 * 4) / (math.hypot(0.2, 0.8) * math.hypot(1, 4))
    assert losses.local_loss("cosine", s, a, m).item() == pytest.approx(1 - cos, abs=1e-6)


def test_kl_local_loss_is_zero_when_distributions_match_and_positive_otherwise():
    m = torch.ones(1, 3, dtype=torch.bool)
    a = torch.tensor([[0.1, 0.5, 0.2]])
    assert losses.local_loss("kl", a.clone(), a, m).item() == pytest.approx(0.0, abs=1e-7)
    s = torch.tensor([[0.0, 0.0, 3.0]])
    p = torch.softmax(a, 1)[0]
    qd = torch.softmax(s, 1)[0]
    want = float((p * (p.log() - qd.log())).sum())
    assert losses.local_loss("kl", s, a, m).item() == pytest.approx(want, rel=1e-5)


def test_top_k_local_loss_picks_the_teachers_top_cells_among_masked_ones():
    s = torch.tensor([[1.0, 2.0, 0.0, 0.0, 9.0]])
    a = torch.tensor([[0.9, 0.1, 0.0, 0.0, 5.0]])  # position 4 is masked: not top, not in the sum
    m = torch.tensor([[True, True, True, True, False]])
    got = losses.local_loss("topk", s, a, m, top_k=0.25)  # ceil(0.25 * 4) = 1 cell: position 0
    denom = math.exp(1) + math.exp(2) + 2
    assert got.item() == pytest.approx(-math.log(math.exp(1) / denom), rel=1e-5)


def test_mismatch_first_picks_the_most_disagreeing_eligible_pairs():
    a = torch.tensor([[1.0, 0.0]] * 4)
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
    m = torch.ones(4, 2, dtype=torch.bool)
    assert losses.mismatch_first(s, a, m, 0.25).tolist() == [False, False, False, True]
    eligible = torch.tensor([True, True, True, False])  # pair 3 has no map
    assert losses.mismatch_first(s, a, m, 0.25, eligible=eligible).tolist() == [False, True, False, False]


def test_local_loss_gradient_moves_relevance_toward_the_map():
    s = torch.tensor([[0.5, 0.5, 0.5]], requires_grad=True)
    a = torch.tensor([[1.0, 0.0, 0.0]])
    losses.local_loss("cosine", s, a, torch.ones(1, 3, dtype=torch.bool)).sum().backward()
    assert s.grad[0, 0] < 0 < s.grad[0, 1]  # descent raises the evidence cell, lowers the others
