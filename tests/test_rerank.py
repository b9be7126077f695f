import shutil

import pytest
import torch
from PIL import Image

from agree_core.index import PageIndex
from agree_core.index.config import SCORE_TOLERANCE
from agree_core.pages import Page, iter_pages
from agree_core.rerank import PageRef, PageScorer
from agree_core.scoring import maxsim
from conftest import copy_index


@pytest.fixture
def index(tmp_path, sample_index):
    copy_index(sample_index, tmp_path / "ix")
    with PageIndex.open(tmp_path / "ix") as ix:
        yield ix


def test_indexed_pages_score_like_search(index, samples, monkeypatch):
    report = str(samples[0])
    hits = index.search("revenue in the third quarter", k=3)
    scorer = PageScorer(index)
    encoded = []
    real = index.encoder.encode_pages
    monkeypatch.setattr(index.encoder, "encode_pages", lambda pages: encoded.extend(pages) or real(pages))
    scores = scorer.scores("revenue in the third quarter", [PageRef(h.source, h.page) for h in hits])
    assert encoded == []  # stored vectors, nothing re-encoded
    # stored vectors read back score as the engine does, to within the datatype's tolerance
    assert scores == pytest.approx([h.score for h in hits], rel=SCORE_TOLERANCE[index.config.vector_datatype])
    assert hits[0].source == report


def test_pages_outside_the_index_are_encoded_in_batches(index, tmp_path, samples, monkeypatch):
    other = tmp_path / "copy.pdf"
    shutil.copy(samples[1], other)  # same content, another path: not in the index
    batches = []
    real = index.encoder.encode_pages
    monkeypatch.setattr(index.encoder, "encode_pages", lambda pages: batches.append(len(pages)) or real(pages))
    scorer = PageScorer(index, batch_size=2)
    refs = [PageRef(str(other), p) for p in (1, 2, 3, 4)] + [PageRef(str(samples[1]), 4)]
    scores = scorer.scores("egress charges and vendor lock-in", refs)
    assert batches == [2, 2]
    # the copy of slide 4 (fresh float vectors) scores like the stored slide 4 (the index's datatype)
    assert scores[3] == pytest.approx(scores[4], rel=SCORE_TOLERANCE[index.config.vector_datatype])
    assert max(range(4), key=lambda i: scores[i]) == 3


def test_on_a_pooled_index_pages_outside_it_are_pooled_alike(tmp_path, encoder, samples):
    with PageIndex.open(tmp_path / "ix", encoder, pool_factor=3) as index:
        index.add([samples[1]], progress=False)
        other = tmp_path / "copy.pdf"
        shutil.copy(samples[1], other)  # same content, another path: encoded by the scorer
        scores = PageScorer(index).scores("egress charges and vendor lock-in",
                                          [PageRef(str(samples[1]), 4), PageRef(str(other), 4)])
    assert scores[1] == pytest.approx(scores[0], rel=0.03)  # unpooled, the copy scored ~1.5x


def test_images_and_unusable_candidates(tmp_path, encoder, samples):
    scorer = PageScorer(encoder=encoder)
    (page,) = list(iter_pages(samples[1], dpi=60, pages=[3]))
    image_path = tmp_path / "slide.png"
    page.image.save(image_path)
    scores = scorer.scores("timeline of the phases", [PageRef(image=image_path), PageRef(key="n1"),
                                                       PageRef(source="/nowhere.pdf", page=1)])
    assert scores[0] > 0.5 and scores[1] is None and scores[2] is None
    emb = encoder.encode_pages([Page.from_image(Image.open(image_path))])[0]
    q = encoder.encode_queries(["timeline of the phases"])
    assert scores[0] == pytest.approx(float(maxsim(q, [emb.vectors], compute_dtype=torch.float32)[0, 0]), abs=1e-3)


def test_arguments_are_validated(index, encoder):
    with pytest.raises(ValueError, match="give an index or an encoder, not both"):
        PageScorer(index, encoder)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        PageScorer(batch_size=0)
    with pytest.raises(ValueError, match="the page image is empty"):
        Page.from_image(Image.new("RGB", (0, 10)))
    assert torch.is_tensor(PageScorer(encoder=encoder).page_vectors([PageRef(image=Image.new("RGB", (50, 50), "white"))])[0])
