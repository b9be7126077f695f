"""MaxSim over int8 documents: about twice the fp32 matrix-multiply rate on CPUs without native bf16.

On AVX2 CPUs bf16 is emulated and fp32 MaxSim cannot beat the fp32 matmul limit; 8-bit products
(u8 x s8, ``vpmaddubsw``) run at about twice that rate. :func:`quantize_documents` turns padded
documents into :class:`Int8Documents` once (what an index would keep in memory: a quarter of
fp32's bytes); :func:`agree_core.scoring.maxsim` given them runs each chunk as one ONNX Runtime
``MatMulInteger`` + ``ReduceMax`` graph (MLAS kernels; onnxruntime ships with ``agree[fast]``).

Quantization, chosen so that the max over a document's vectors can be taken on the exact int32
products:
- documents: one scale per dimension over all documents, values in [-63, 63] stored as uint8
  with zero point 64 (7 bits: ``vpmaddubsw`` adds two u8 x s8 products in int16, which 255 x 127
  x 2 would overflow). A per-dimension scale folds into the query: ``<q, s * d8> = <q * s, d8>``.
- queries: one scale per query token (a column of the product), values in [-127, 127]; a scale
  per column does not change which document vector is the best, so the max runs on the int32
  products and only the (documents, query tokens) maxima are scaled back.
- padded document slots repeat the document's first vector (they can never change its max).

Scores differ from fp32 by quantization noise (about 0.3% of a score on normalised vectors);
rankings agree up to near-ties. Pass float documents for exact scores.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Int8Documents", "quantize_documents", "maxsim_int8"]

_ZERO = 64  # documents' zero point: 7-bit values 1..127
_DOC_MAX = 63
_QUERY_MAX = 127


@dataclass(frozen=True)
class Int8Documents:
    """Documents for :func:`agree_core.scoring.maxsim` as int8 codes (see the module docstring).

    ``codes`` ``(n, L, dim)`` uint8 (zero point 64), ``scales`` ``(dim,)`` float32 (a vector is
    ``scales * (codes - 64)``), ``empty`` ``(n,)`` bool: documents without vectors (score 0)."""

    codes: np.ndarray
    scales: np.ndarray
    empty: np.ndarray

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]


def quantize_documents(documents: torch.Tensor | list[torch.Tensor],
                       mask: torch.Tensor | None = None, *, block: int = 256) -> Int8Documents:
    """:class:`Int8Documents` of padded ``(n, L, dim)`` documents (with an optional ``(n, L)``
    mask, True on real vectors) or of a list of ``(n_i, dim)`` tensors. Works ``block``
    documents at a time (no full-size float temporary).

    >>> d = quantize_documents([torch.tensor([[1.0, 0.0], [0.0, -0.5]]), torch.tensor([[0.5, 0.5]])])
    >>> d.codes[1].tolist(), d.empty.tolist()     # the padded slot repeats the first vector
    ([[95, 127], [95, 127]], [False, False])
    """
    from agree_core.scoring import pad

    padded, mask = pad(documents, mask)  # (n, L, dim), (n, L) bool
    if padded.requires_grad:
        raise ValueError("int8 documents are for search, not training: pass float documents to maxsim")
    padded, mask = padded.detach().cpu(), mask.cpu()
    n, length, dim = padded.shape
    amax = torch.zeros(dim)
    full = bool(mask.all())
    for lo in range(0, n, block):
        part = padded[lo : lo + block].float()
        if not full:
            part = part.masked_fill(~mask[lo : lo + block, :, None], 0.0)
        if part.numel():
            amax = torch.maximum(amax, part.abs().amax(dim=(0, 1)))
    scales = torch.where(amax > 0, amax / _DOC_MAX, torch.ones_like(amax))
    codes = np.empty((n, length, dim), dtype=np.uint8)
    empty = ~mask.any(dim=1)
    first = torch.where(mask.any(dim=1), mask.float().argmax(dim=1), torch.zeros(n, dtype=torch.long))
    for lo in range(0, n, block):
        part = padded[lo : lo + block].float()
        m = mask[lo : lo + block]
        if not full and not bool(m.all()):  # padded slots take the document's first real vector
            repeat = part[torch.arange(len(part)), first[lo : lo + block]]  # (b, dim)
            part = torch.where(m[:, :, None], part, repeat[:, None, :])
        q = part.mul(1.0 / scales).round_().clamp_(-_DOC_MAX, _DOC_MAX).add_(_ZERO)
        codes[lo : lo + block] = q.to(torch.uint8).numpy()
    return Int8Documents(codes, scales.numpy().astype(np.float32), empty.numpy())


def maxsim_int8(q: torch.Tensor, q_mask: torch.Tensor, docs: Int8Documents,
                chunk_size: int | None, block_elements: int, workers: int) -> torch.Tensor:
    """``(n_q, n_d)`` float32 MaxSim of padded queries ``(n_q, Lq, dim)`` against ``docs``
    (called by :func:`agree_core.scoring.maxsim`; see there)."""
    from agree_core.cpu import run_in_workers, single_threaded_ops

    if q.requires_grad and torch.is_grad_enabled():
        raise ValueError("maxsim over int8 documents has no gradient: pass float documents")
    n_q, lq, dim = q.shape
    n_d, length, d_dim = docs.shape
    if d_dim != dim:
        raise ValueError(f"query dim {dim} != document dim {d_dim}")
    rows = n_q * lq
    out = torch.zeros(n_q, n_d, dtype=torch.float32)
    if n_d == 0 or length == 0:
        return out
    # the documents' per-dimension scales fold into the query; then one scale per query token
    cols = (q.detach().float().cpu() * torch.from_numpy(docs.scales)).reshape(rows, dim)
    cols = cols.masked_fill(~q_mask.cpu().reshape(rows, 1), 0.0)  # padded query tokens add 0
    amax = cols.abs().amax(dim=1)
    col_scale = torch.where(amax > 0, amax / _QUERY_MAX, torch.ones_like(amax))
    q8 = torch.round(cols / col_scale[:, None]).clamp_(-_QUERY_MAX, _QUERY_MAX).to(torch.int8)
    q8 = np.ascontiguousarray(q8.numpy().T)  # (dim, rows)
    col_scale_np = col_scale.numpy()
    if chunk_size is None:
        per_worker = -(-n_d // (4 * max(1, workers)))
        chunk_size = max(1, min(block_elements // (rows * length), per_worker))
    single = workers > 1 and n_d > chunk_size and single_threaded_ops() is not None
    session = _session(1 if single else max(1, torch.get_num_threads()))
    scores = out.numpy()  # (n_q, n_d), written column block by column block

    def score_chunk(lo: int, state: dict) -> None:
        (best,) = session.run(None, {"docs": docs.codes[lo : lo + chunk_size], "query": q8})  # (c, rows) int32
        s = (best.astype(np.float32) * col_scale_np).reshape(-1, n_q, lq).sum(axis=2)  # (c, n_q)
        s[docs.empty[lo : lo + chunk_size]] = 0.0
        scores[:, lo : lo + len(s)] = s.T

    starts = range(0, n_d, chunk_size)
    if single:
        run_in_workers(score_chunk, starts, min(workers, len(starts)))
    else:
        state: dict = {}
        for lo in starts:
            score_chunk(lo, state)
    return out


_SESSIONS: dict[int, object] = {}
_LOCK = threading.Lock()


def _session(threads: int):
    """The ONNX Runtime session of ``best = max over vectors of MatMulInteger(docs, query)``
    with ``threads`` intra-op threads, built on first use (sessions are safe to run from
    several threads at once)."""
    with _LOCK:
        if threads not in _SESSIONS:
            try:
                import onnxruntime as ort
                from onnx import TensorProto, helper
            except ImportError as e:
                raise ImportError("maxsim over int8 documents needs onnxruntime and onnx: "
                                  "pip install 'agree[fast]' (or pass float documents)") from e
            docs = helper.make_tensor_value_info("docs", TensorProto.UINT8, [None, None, None])
            query = helper.make_tensor_value_info("query", TensorProto.INT8, [None, None])
            best = helper.make_tensor_value_info("best", TensorProto.INT32, [None, None])
            zero = helper.make_tensor("zero", TensorProto.UINT8, [], [_ZERO])
            graph = helper.make_graph(
                [helper.make_node("MatMulInteger", ["docs", "query", "zero"], ["sims"]),
                 helper.make_node("ReduceMax", ["sims"], ["best"], axes=[1], keepdims=0)],
                "maxsim_int8", [docs, query], [best], initializer=[zero])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            model.ir_version = 8
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            _SESSIONS[threads] = ort.InferenceSession(model.SerializeToString(), options,
                                                      providers=["CPUExecutionProvider"])
        return _SESSIONS[threads]
