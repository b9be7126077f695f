import pytest
import torch

from agree_core.scoring import maxsim, pad, patch_relevance, similarity_map


def naive_maxsim(queries, documents):
    out = torch.zeros(len(queries), len(documents))
    for i, q in enumerate(queries):
        for j, d in enumerate(documents):
            if d.shape[0] == 0:
                continue
            out[i, j] = sum(max(float(q[a] @ d[b]) for b in range(d.shape[0])) for a in range(q.shape[0]))
    return out


def random_set(n, lo, hi, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(int(torch.randint(lo, hi, (1,), generator=g)), dim,
                                                      generator=g), dim=-1) for _ in range(n)]


def test_maxsim_matches_naive_reference_in_float32():
    qs, ds = random_set(3, 1, 6, seed=1), random_set(9, 1, 12, seed=2)
    got = maxsim(qs, ds, compute_dtype=torch.float32)
    assert got.dtype == torch.float32 and got.shape == (3, 9)
    torch.testing.assert_close(got, naive_maxsim(qs, ds), atol=1e-5, rtol=1e-5)


def test_bf16_default_ranks_like_float32():
    qs, ds = random_set(4, 3, 8, dim=64, seed=3), random_set(50, 5, 40, dim=64, seed=4)
    exact = maxsim(qs, ds, compute_dtype=torch.float32)
    fast = maxsim(qs, ds, compute_dtype=torch.bfloat16)
    assert (fast - exact).abs().max() < 0.05 * exact.abs().max()
    assert (fast.argmax(dim=1) == exact.argmax(dim=1)).all()


def test_padding_never_wins_over_negative_similarities():
    # Every real similarity is negative: a zero-padded slot must not score 0.
    q = [torch.tensor([[1.0, 0.0]])]
    d_short = torch.tensor([[-1.0, 0.0]])
    d_long = torch.tensor([[-0.5, 0.0], [-0.2, 0.0], [-0.9, 0.0]])
    got = maxsim(q, [d_short, d_long], compute_dtype=torch.float32)
    torch.testing.assert_close(got, torch.tensor([[-1.0, -0.2]]))


def test_list_and_padded_inputs_agree():
    qs, ds = random_set(3, 1, 7, seed=5), random_set(11, 1, 15, seed=6)
    q_pad, q_mask = pad(qs)
    d_pad, d_mask = pad(ds)
    # garbage in padded slots must be ignored
    q_pad[~q_mask] = 5.0
    d_pad[~d_mask] = 5.0
    a = maxsim(qs, ds, compute_dtype=torch.float32)
    b = maxsim(q_pad, d_pad, q_mask, d_mask, compute_dtype=torch.float32)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_results_do_not_depend_on_chunk_size(chunk):
    qs, ds = random_set(2, 1, 5, seed=7), random_set(20, 1, 30, seed=8)
    ref = maxsim(qs, ds, chunk_size=1000, compute_dtype=torch.float32)
    torch.testing.assert_close(maxsim(qs, ds, chunk_size=chunk, compute_dtype=torch.float32), ref)


def test_query_batch_size_does_not_change_scores():
    qs, ds = random_set(6, 1, 9, seed=9), random_set(10, 1, 20, seed=10)
    together = maxsim(qs, ds, compute_dtype=torch.float32)
    alone = torch.cat([maxsim([q], ds, compute_dtype=torch.float32) for q in qs])
    torch.testing.assert_close(together, alone)


def test_document_without_vectors_scores_zero():
    d_pad = torch.zeros(2, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    d_pad[0, :2] = torch.eye(4)[:2]
    got = maxsim([torch.eye(4)[:1]], d_pad, document_mask=mask, compute_dtype=torch.float32)
    torch.testing.assert_close(got, torch.tensor([[1.0, 0.0]]))


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="query dim 4 != document dim 3"):
        maxsim([torch.ones(1, 4)], [torch.ones(2, 3)])
    with pytest.raises(ValueError, match="mask shape"):
        maxsim(torch.ones(1, 2, 4), torch.ones(1, 3, 4), query_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty list"):
        maxsim([], [torch.ones(2, 3)])
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        maxsim([torch.ones(1, 3)], [torch.ones(2, 3)], chunk_size=0)


def test_maxsim_map_sums_to_the_score():
    qs, ds = random_set(1, 4, 5, seed=11), random_set(1, 30, 31, seed=12)
    q, d = qs[0], ds[0]
    cells = torch.randint(0, 12, (d.shape[0],), generator=torch.Generator().manual_seed(0))
    m = similarity_map(q, d, cells, (3, 4), mode="maxsim")
    assert m.shape == (3, 4)
    torch.testing.assert_close(m.sum(), maxsim([q], [d], compute_dtype=torch.float32)[0, 0])


def test_mean_map_is_patch_relevance_per_cell():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.2, 0.2], [0.0, -1.0]])
    cells = torch.tensor([0, 0, 3])  # two vectors share cell 0: the max is kept
    m = similarity_map(q, d, cells, (2, 2), mode="mean")
    rel = patch_relevance(q, d)
    torch.testing.assert_close(m, torch.tensor([[max(rel[0], rel[1]), 0.0], [0.0, rel[2]]]))


def test_vectors_off_the_grid_are_left_out_of_maps():
    q = torch.tensor([[1.0, 0.0]])
    d = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    m = similarity_map(q, d, torch.tensor([-1, 2]), (1, 3))
    torch.testing.assert_close(m, torch.zeros(1, 3))  # the best match sits off the grid
    with pytest.raises(ValueError, match="mode must be"):
        similarity_map(q, d, torch.tensor([0, 1]), (1, 3), mode="median")
