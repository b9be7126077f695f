"""Evidence boxes: the regions of a page that matched, from the MaxSim similarity map."""

import pytest
import torch

from agree_core.encoders import PageEmbedding
from agree_core.evidence import evidence
from agree_core.pages import Word
from agree_core.scoring import maxsim


def page(cells: list[int], grid=(4, 4)) -> PageEmbedding:
    """One unit vector per cell: vector i points along axis i."""
    return PageEmbedding(torch.eye(len(cells)), grid, torch.tensor(cells))


def test_touching_cells_form_one_region_and_scores_sum_to_the_page_score():
    emb = page([0, 1, 15, -1])  # cells (0,0), (0,1) touch; (3,3) stands alone; one vector off the grid
    q = torch.tensor([[1.0, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 0.25, 0]])
    regions = evidence(q, emb, gap=0)
    assert [r["box"] for r in regions] == [[0.0, 0.0, 0.5, 0.25], [0.75, 0.75, 1.0, 1.0]]
    assert [r["score"] for r in regions] == [1.5, 0.25]
    assert sum(r["score"] for r in regions) == pytest.approx(float(maxsim([q], [emb.vectors], compute_dtype=torch.float32)[0, 0]))
    assert len(evidence(q, emb, top=1)) == 1


def test_gap_joins_cells_with_empty_cells_between_them():
    emb = page([0, 2])  # (0,0) and (0,2): one empty cell apart
    q = torch.eye(2)
    assert len(evidence(q, emb, gap=0)) == 2
    (joined,) = evidence(q, emb, gap=1)
    assert joined["box"] == [0.0, 0.0, 0.75, 0.25] and joined["score"] == 2.0


def test_word_tied_pages_give_one_entry_per_matched_word():
    emb = page([0, 1])  # vector 0 on "Revenue" (cell 0), vector 1 on "2023" (cell 1)
    words = [Word("of", (0.01, 0.05, 0.09, 0.1)), Word("Revenue", (0.02, 0.05, 0.2, 0.1)),
             Word("2023", (0.3, 0.05, 0.45, 0.1)), Word("elsewhere", (0.8, 0.8, 0.95, 0.9))]
    q = torch.tensor([[1.0, 0], [0.9, 0], [0, 0.5]])  # two tokens on Revenue, one on 2023
    got = evidence(q, emb, words)
    assert got == [{"box": [0.02, 0.05, 0.2, 0.1], "text": "Revenue", "score": 1.9},  # the longer word of cell 0
                   {"box": [0.3, 0.05, 0.45, 0.1], "text": "2023", "score": 0.5}]
    assert sum(e["score"] for e in got) == pytest.approx(float(maxsim([q], [emb.vectors], compute_dtype=torch.float32)[0, 0]))


def test_vectors_on_cells_without_words_are_patches_with_no_text():
    emb = page([0, 10])  # cell 10 holds no word: not a word-tied page (a visual encoder's patches)
    got = evidence(torch.tensor([[1.0, 0], [0, 0.5]]), emb, [Word("Revenue", (0.05, 0.05, 0.2, 0.1))])
    assert [e["text"] for e in got] == [None, None]
    assert got[0]["box"] == [0.0, 0.0, 0.25, 0.25]  # whole cells, not the word


def test_boxes_stay_inside_the_page_and_never_collapse():
    emb = page([0])
    (e,) = evidence(torch.eye(1), emb, [Word("x", (-0.01, 0.02, -0.01, 0.02))])
    x0, y0, x1, y1 = e["box"]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def test_no_match_gives_no_evidence_and_bad_settings_are_refused():
    emb = page([0, 1])
    assert evidence(-torch.eye(2), emb) == []  # every similarity negative: nothing to point at
    with pytest.raises(ValueError, match="top must be >= 1, got 0"):
        evidence(torch.eye(2), emb, top=0)
    with pytest.raises(ValueError, match="gap must be >= 0, got -1"):
        evidence(torch.eye(2), emb, gap=-1)


def test_stored_words_read_the_json_string_and_the_older_list_alike():
    from agree_core.evidence import stored_words, word_rows

    words = [Word("otters", (0.1, 0.2, 0.33333333, 0.25)), Word('say "hi" ünïcode', (0.5, 0.5, 0.9, 0.6))]
    stored = word_rows(words)
    assert isinstance(stored, str)  # one string for the engine to take
    older = [["otters", 0.1, 0.2, 0.3333, 0.25], ['say "hi" ünïcode', 0.5, 0.5, 0.9, 0.6]]  # indexes before
    assert stored_words({"words": stored}) == stored_words({"words": older})
    assert [w.text for w in stored_words({"words": stored})] == ["otters", 'say "hi" ünïcode']
    assert stored_words({}) is None
