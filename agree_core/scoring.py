"""Late-interaction scoring: MaxSim and similarity maps (pure functions).

MaxSim scores a query against a document as the sum, over query tokens, of the best dot
product with any document vector:

    S(q, d) = sum_i max_j <q_i, d_j>

Inputs are either lists of 2-D tensors ``(n_tokens_i, dim)`` of any lengths, or a padded
3-D tensor ``(n, max_tokens, dim)`` with a boolean mask ``(n, max_tokens)`` that is True on
real tokens. Padded document slots are excluded with ``-inf`` before the max (a padded slot
scoring 0 would beat real negative similarities); padded query slots contribute nothing.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from agree_core import cpu
from agree_core.cpu import run_in_workers, single_threaded_ops
from agree_core.maxsim_int8 import Int8Documents, maxsim_int8, quantize_documents

TensorOrList = Union[torch.Tensor, Sequence[torch.Tensor]]

__all__ = ["maxsim", "quantize_documents", "Int8Documents", "similarity_map", "patch_relevance", "default_compute_dtype", "pad", "idf_weights"]


def default_compute_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """The fastest dtype that keeps ranking quality on ``device``.

    bf16 where the hardware multiplies it natively (CUDA with bf16, CPUs with AVX512-BF16 or
    AMX), float32 elsewhere. Never fp16 on CPU: it is emulated and two orders of magnitude slower.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu.cpu_has_native_bf16():  # looked up on the module: one answer (and one patch) for all
        return torch.bfloat16
    return torch.float32


def pad(
    tensors: TensorOrList, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise either input form to ``(padded (n, L, dim), mask (n, L) bool)``.

    >>> x, m = pad([torch.ones(1, 2), torch.ones(3, 2)])
    >>> tuple(x.shape), m.tolist()
    ((2, 3, 2), [[True, False, False], [True, True, True]])
    """
    if isinstance(tensors, torch.Tensor):
        tensors = _as_3d(tensors)
        if mask is None:
            mask = torch.ones(tensors.shape[:2], dtype=torch.bool, device=tensors.device)
        elif mask.shape != tensors.shape[:2]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match tensor shape "
                f"{tuple(tensors.shape[:2])} (n, tokens)"
            )
        return tensors, mask.to(torch.bool)
    if mask is not None:
        raise ValueError("a mask is only accepted with a padded 3-D tensor, not with a list")
    tensors = list(tensors)
    if not tensors:
        raise ValueError("got an empty list of tensors")
    dims = {t.shape[-1] for t in tensors}
    if len(dims) != 1 or any(t.dim() != 2 for t in tensors):
        shapes = sorted({tuple(t.shape) for t in tensors})[:4]
        raise ValueError(f"every tensor must be 2-D (tokens, dim) with one dim, got {shapes}")
    lengths = torch.tensor([t.shape[0] for t in tensors])
    padded = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)  # (n, L, dim)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]  # (n, L)
    return padded, mask.to(padded.device)


# Similarities per block (chunk vectors x query rows); each worker thread keeps one block in
# the compute dtype and one in float32 (2 MB + 4 MB). Measured on a 2-core AVX512-BF16 CPU
# with 32 query tokens and 1,030-vector pages: chunks of 6 to 45 pages cost within noise of
# each other, the larger ones slightly less.
_BLOCK_ELEMENTS = 1 << 20
# Below this many FLOPs, starting worker threads costs more than it saves.
_PARALLEL_MIN_FLOPS = 100_000_000


def _as_3d(tensors: torch.Tensor) -> torch.Tensor:
    """``(n, tokens, dim)``: a 2-D tensor is one sequence."""
    if tensors.dim() == 2:
        tensors = tensors.unsqueeze(0)
    if tensors.dim() != 3:
        raise ValueError(
            f"expected a 3-D tensor (n, tokens, dim) or a list of 2-D tensors, "
            f"got a tensor of shape {tuple(tensors.shape)}"
        )
    return tensors


def maxsim(
    queries: TensorOrList,
    documents: TensorOrList,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """MaxSim of every query against every document.

    Args:
        queries: list of ``(n_q_tokens_i, dim)`` tensors, or padded ``(n_q, Lq, dim)``.
        documents: list of ``(n_d_tokens_j, dim)`` tensors, or padded ``(n_d, Ld, dim)``.
            Fastest as one contiguous padded tensor already in ``compute_dtype`` (what an
            index keeps): chunks of it are then multiplied as views, without conversion or copy.
            Or :class:`~agree_core.maxsim_int8.Int8Documents` from :func:`quantize_documents`:
            int8 products, about twice the fp32 rate on CPUs without native bf16, scores
            within quantization noise of fp32 (see agree_core/maxsim_int8.py; CPU, no gradient).
        query_mask: ``(n_q, Lq)`` bool, True on real tokens (padded input only).
        document_mask: ``(n_d, Ld)`` bool, True on real vectors (padded input only).
        chunk_size: documents scored per matrix multiply; bounds the temporary
            ``(chunk * Ld, n_q * Lq)`` similarity block (one per worker thread). Default:
            as many as fill a block of about a million similarities, and no more than give
            each thread 4 chunks.
        compute_dtype: dtype of the products; default :func:`default_compute_dtype`
            (bf16 on CPUs with native bf16). Pass ``torch.float32`` for exact scores.

    Returns:
        ``(n_q, n_d)`` float32 scores. A document with no vectors scores 0.

    On CPU, large jobs are split by chunk over ``torch.get_num_threads()`` worker threads, each
    running its products single-threaded on its own run of documents and taking over the
    remaining chunks of a slower one when done, instead of every product being split over
    all cores: a busy or preempted core then delays only its own chunk, not every multiply.

    >>> q = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])]                # 2 query tokens
    >>> d = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8], [-1.0, 0.0]])]
    >>> maxsim(q, d, compute_dtype=torch.float32)                    # 1+0, 0.6+0.8
    tensor([[1.0000, 1.4000]])
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    q, q_mask = pad(queries, query_mask)  # (n_q, Lq, dim), (n_q, Lq)
    if isinstance(documents, Int8Documents):  # int8 products: about 2x the fp32 rate on AVX2
        if document_mask is not None or compute_dtype is not None:
            raise ValueError("int8 documents carry their own padding and dtype: "
                             "pass no document_mask or compute_dtype with them")
        flops = 2 * q.shape[0] * q.shape[1] * documents.codes.size
        workers = torch.get_num_threads() if flops >= _PARALLEL_MIN_FLOPS else 1
        return maxsim_int8(q, q_mask, documents, chunk_size, _BLOCK_ELEMENTS, workers)
    device = q.device
    dtype = compute_dtype or default_compute_dtype(device)
    n_q, lq, dim = q.shape
    rows = n_q * lq
    # Products as (chunk*Ld, dim) @ (dim, n_q*Lq): the document rows stream through the
    # multiply as they lie in memory and the few query columns stay packed, which measured
    # 1.7x faster on CPU than the transposed orientation.
    q_cols = q.to(dtype).reshape(rows, dim).T.contiguous()  # (dim, n_q*Lq)
    q_pad = ~q_mask.to(device).reshape(1, rows)
    if not bool(q_pad.any()):
        q_pad = None

    if isinstance(documents, torch.Tensor):
        # No all-True mask when none is given, and no whole-mask check here: ops this large in
        # the calling thread leave torch's OpenMP threads spinning for milliseconds, taking
        # cores from the workers; each chunk checks its own slice of the mask instead.
        if document_mask is None:
            d_all, d_mask_all = _as_3d(documents), None
        else:
            d_all, d_mask_all = pad(documents, document_mask)
        n_d, ld_max = d_all.shape[:2]
        if d_all.shape[-1] != dim:
            raise ValueError(f"query dim {dim} != document dim {d_all.shape[-1]}")
        docs = None
    else:
        if document_mask is not None:
            raise ValueError("document_mask is only accepted with a padded 3-D tensor")
        docs = list(documents)
        n_d = len(docs)
        ld_max = max((t.shape[0] for t in docs), default=0)
    if n_d == 0 or ld_max == 0:  # no document vectors: every score is 0
        return torch.zeros(n_q, n_d, dtype=torch.float32, device=device)
    out = torch.empty(n_q, n_d, dtype=torch.float32, device=device)  # every chunk writes its columns
    if chunk_size is None:  # a block's worth, but at least 4 chunks per thread to share out
        per_thread = -(-n_d // (4 * torch.get_num_threads()))
        chunk_size = max(1, min(_BLOCK_ELEMENTS // (rows * ld_max), per_thread))
    grad = torch.is_grad_enabled() and (
        q.requires_grad or (d_all.requires_grad if docs is None else any(t.requires_grad for t in docs))
    )

    def score_chunk(lo: int, state: dict) -> None:
        """Columns [lo, lo + chunk_size) of ``out``."""
        if docs is None:
            d = d_all[lo : lo + chunk_size]
            d_mask = None if d_mask_all is None else d_mask_all[lo : lo + chunk_size]
        else:
            d, d_mask = pad(docs[lo : lo + chunk_size])
            if d.shape[-1] != dim:
                raise ValueError(f"query dim {dim} != document dim {d.shape[-1]}")
        c, ld, _ = d.shape
        if ld == 0:
            out[:, lo : lo + c] = 0.0  # documents without vectors score 0
            return
        d_rows = d.to(device=device, dtype=dtype).reshape(c * ld, dim)  # a view when possible
        half = dtype in (torch.bfloat16, torch.float16)  # reduce in float32: much faster on CPU
        if grad:
            sims = d_rows @ q_cols
            sims = sims.float() if half else sims
        else:  # reuse the blocks of this thread rather than allocate them for every chunk
            shape = (c * ld, rows)
            sims = torch.mm(d_rows, q_cols, out=_block(state, "sims", shape, dtype, device))
            if half:
                sims = _block(state, "f32", shape, torch.float32, device).copy_(sims)
        sims = sims.view(c, ld, rows)
        empty = None
        if d_mask is not None:
            d_mask = d_mask.to(device)
            if not bool(d_mask.all()):
                sims.masked_fill_(~d_mask.view(c, ld, 1), float("-inf"))  # our own block: in place
                empty = ~d_mask.any(dim=1)  # (c,)
        best = sims.amax(dim=1)  # (c, n_q*Lq): max over each document's vectors
        if empty is not None:
            best = best.masked_fill(empty.view(c, 1), 0.0)
        if q_pad is not None:
            best = best.masked_fill(q_pad, 0.0)
        out[:, lo : lo + c] = best.view(c, n_q, lq).sum(dim=-1).T

    starts = range(0, n_d, chunk_size)
    workers = min(torch.get_num_threads(), len(starts))
    flops = 2 * rows * ld_max * n_d * dim
    if (
        workers > 1
        and device.type == "cpu"
        and not grad
        and flops >= _PARALLEL_MIN_FLOPS
        and single_threaded_ops() is not None
    ):
        run_in_workers(score_chunk, starts, workers)
    else:
        state: dict = {}
        for lo in starts:
            score_chunk(lo, state)
    return out


def _block(state: dict, name: str, shape: tuple[int, int], dtype: torch.dtype, device) -> torch.Tensor:
    """A contiguous scratch tensor of ``shape``, kept in ``state`` and grown as needed."""
    numel = shape[0] * shape[1]
    buf = state.get(name)
    if buf is None or buf.numel() < numel:
        buf = state[name] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel].view(shape)


def patch_relevance(query: torch.Tensor, document: torch.Tensor) -> torch.Tensor:
    """AGREE's retriever patch relevance: ``s_j = mean_i <q_i, d_j>``.

    Args:
        query: ``(n_q_tokens, dim)``.
        document: ``(n_vectors, dim)``.

    Returns:
        ``(n_vectors,)`` float32.

    >>> patch_relevance(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    tensor([0.5000, 0.5000])
    """
    return (document.float() @ query.float().T).mean(dim=1)  # (n_vectors,)


def similarity_map(
    query: torch.Tensor,
    document: torch.Tensor,
    cells: torch.Tensor,
    grid: tuple[int, int],
    mode: str = "maxsim",
) -> torch.Tensor:
    """Per-cell relevance of a page for a query, on the page's ``(rows, cols)`` grid.

    Args:
        query: ``(n_q_tokens, dim)`` query vectors.
        document: ``(n_vectors, dim)`` page vectors.
        cells: ``(n_vectors,)`` int, the flat grid cell (``row * cols + col``) of each
            vector; ``-1`` for vectors tied to no cell (prompt or special tokens).
        grid: ``(rows, cols)``.
        mode: ``"maxsim"``: each query token adds its best similarity to the cell of its
            best-matching vector, so the map sums to the MaxSim score and shows exactly what
            made the page rank (vectors outside the grid excepted). ``"mean"``: AGREE's
            patch relevance (mean over query tokens), the max over the vectors in a cell.

    Returns:
        ``(rows, cols)`` float32; cells without vectors are 0.

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> d = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    >>> similarity_map(q, d, torch.tensor([0, 3]), (2, 2))
    tensor([[1.0000, 0.0000],
            [0.0000, 0.5000]])
    """
    rows, cols = grid
    if cells.shape[0] != document.shape[0]:
        raise ValueError(f"{cells.shape[0]} cells for {document.shape[0]} vectors")
    flat = torch.zeros(rows * cols, dtype=torch.float32)
    on_grid = cells >= 0
    if not bool(on_grid.any()):
        return flat.view(rows, cols)
    if mode == "maxsim":
        sims = query.float() @ document.float().T  # (n_q, n_vectors)
        best, where = sims.max(dim=1)  # (n_q,)
        keep = on_grid[where]
        flat.index_add_(0, cells[where[keep]].long(), best[keep])
    elif mode == "mean":
        rel = patch_relevance(query, document)[on_grid]  # (n_on_grid,)
        flat.fill_(float("-inf"))
        flat.scatter_reduce_(0, cells[on_grid].long(), rel, reduce="amax")
        flat[torch.isinf(flat)] = 0.0
    else:
        raise ValueError(f"mode must be 'maxsim' or 'mean', got {mode!r}")
    return flat.view(rows, cols)


def idf_weights(terms: Sequence[int], document_frequency: dict[int, int], n_documents: int) -> torch.Tensor:
    """Weights of query tokens by the inverse document frequency of their terms (BM25's IDF),
    scaled to mean 1 so that weighted scores stay on the unweighted scale.

    Multiplying query vectors by these weights makes MaxSim count a rare term's match more
    than a common one's: ``max_j <w q_i, d_j> = w max_j <q_i, d_j>`` for ``w > 0``.

    >>> idf_weights([7, 9], {7: 1, 9: 99}, 100)   # term 7 is rare, term 9 is everywhere
    tensor([1.9929, 0.0071])
    """
    if not len(terms):
        return torch.ones(0)
    df = torch.tensor([document_frequency.get(int(t), 0) for t in terms], dtype=torch.float64)
    idf = torch.log((n_documents - df + 0.5) / (df + 0.5) + 1.0)  # > 0 always
    return (idf / idf.mean()).float()
