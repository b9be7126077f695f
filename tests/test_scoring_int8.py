"""maxsim over int8 documents (agree_core/maxsim_int8.py): scores within quantization noise of
fp32, the same ranking, padding and empty documents handled, the threaded path equal to the
single-threaded one, clear errors."""

import pytest
import torch

from agree_core import cpu
from agree_core.scoring import maxsim, quantize_documents

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _data(n_docs=200, dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    norm = torch.nn.functional.normalize
    queries = [norm(torch.randn(n, dim, generator=g), dim=-1) for n in (12, 5)]
    docs = [norm(torch.randn(int(n), dim, generator=g), dim=-1)
            for n in torch.randint(1, 120, (n_docs,), generator=g)]
    return queries, docs


def test_int8_scores_and_ranking_follow_fp32():
    queries, docs = _data()
    exact = maxsim(queries, docs, compute_dtype=torch.float32)  # (2, 200)
    got = maxsim(queries, quantize_documents(docs))
    assert got.shape == exact.shape and got.dtype == torch.float32
    for q, e, o in zip(queries, exact, got):  # each query token's max within 0.003 of fp32
        assert (o - e).abs().max() < 0.003 * len(q)
    for e, o in zip(exact, got):  # top-10: the same pages, up to near-ties at the cut
        top_e, top_o = set(e.topk(10).indices.tolist()), set(o.topk(10).indices.tolist())
        tol = 2 * (got - exact).abs().max()
        assert all(abs(e[i] - e.topk(10).values[-1]) <= tol for i in top_e ^ top_o)


def test_padding_never_wins_and_empty_documents_score_zero():
    q = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    padded = torch.tensor([[[0.6, 0.8], [9.0, 9.0]], [[-1.0, 0.0], [9.0, 9.0]], [[5.0, 5.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, False], [True, False], [False, False]])  # padded slots hold 9s
    got = maxsim(q, quantize_documents(padded, mask))[0]
    want = maxsim(q, padded, document_mask=mask, compute_dtype=torch.float32)[0]
    assert want.tolist() == pytest.approx([1.4, -1.0, 0.0])
    assert got.tolist() == pytest.approx(want.tolist(), abs=0.02)


@pytest.mark.skipif(cpu.single_threaded_ops() is None, reason="no per-thread OpenMP setting here")
def test_threaded_path_equals_single_threaded(monkeypatch):
    queries, docs = _data(n_docs=400, dim=128, seed=1)
    q8 = quantize_documents(docs)
    calls = []
    real = cpu.run_in_workers
    monkeypatch.setattr(cpu, "run_in_workers", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    monkeypatch.setattr("agree_core.maxsim_int8._SESSIONS", {})
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        threaded = maxsim(queries, q8, chunk_size=16)
        torch.set_num_threads(1)
        single = maxsim(queries, q8, chunk_size=16)
    finally:
        torch.set_num_threads(previous)
    assert calls == [2]  # the 2-thread call ran in worker threads, the other in the caller
    assert torch.equal(threaded, single)  # integer products: bit-identical


def test_clear_errors():
    queries, docs = _data(n_docs=3)
    q8 = quantize_documents(docs)
    with pytest.raises(ValueError, match="pass no document_mask or compute_dtype"):
        maxsim(queries, q8, compute_dtype=torch.float32)
    with pytest.raises(ValueError, match="query dim 32 != document dim 64"):
        maxsim([torch.randn(3, 32)], q8)
    with pytest.raises(ValueError, match="int8 documents are for search"):
        quantize_documents([torch.randn(3, 8, requires_grad=True)])
