"""The training-data format, pages for it, the converter from an index, query synthesis."""

from __future__ import annotations

import json
import os

from pathlib import Path

import pytest
import torch
from PIL import Image

from agree_core.teacher import MapCache, TeacherConfig
from agree_core.training.data import DataError, PageLoader, PageRef, check_files, read_examples
from agree_core.training.synthesize import QuestionWriter, parse_questions, synthesize
from conftest import cli, copy_index, make_pdf


def write_lines(path: Path, *objs) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return path


# -- the format -------------------------------------------------------------------------------
def test_valid_lines_both_forms_negatives_map(tmp_path):
    other = tmp_path / "elsewhere" / "o.pdf"
    data = write_lines(
        tmp_path / "train.jsonl",
        {"qid": "q1", "query": "What was the 2023 revenue?", "image": "pages/p4.png"},
        "",
        {"query": "Which method is fastest?", "pdf": "papers/survey.pdf", "page": 7,
         "negatives": [{"pdf": str(other), "page": 2}, {"image": "pages/x.png"}], "map": "3fa1e2"},
        {"qid": 9, "query": "made up?", "pdf": "s.pdf", "page": 1, "synthetic": True,
         "meta": {"model": "qwen"}},
    )
    a, b, c = read_examples(data)
    assert (a.line, a.qid, a.query) == (1, "q1", "What was the 2023 revenue?")
    assert a.page == PageRef(image=tmp_path / "pages" / "p4.png") and a.negatives == () and a.map_key is None
    assert a.page.where == a.page.source == str(tmp_path / "pages" / "p4.png")
    assert (b.line, b.qid, b.map_key) == (3, 3, "3fa1e2")  # qid defaults to the line number
    assert b.page == PageRef(pdf=tmp_path / "papers" / "survey.pdf", page=7)
    assert b.page.where == f"{tmp_path}/papers/survey.pdf page 7" and b.page.source.endswith("survey.pdf")
    assert b.negatives == (PageRef(pdf=other, page=2), PageRef(image=tmp_path / "pages" / "x.png"))
    assert c.qid == 9


BAD = {
    'not json': r'not a JSON object',
    '["a list"]': r'not a JSON object',
    '{"image": "a.png"}': r'needs a non-empty "query"',
    '{"query": "  ", "image": "a.png"}': r'needs a non-empty "query"',
    '{"query": "q", "pdf": "a.pdf", "page": 0}': r'"page" must be a 1-based integer, got 0',
    '{"query": "q", "pdf": "a.pdf", "page": "7"}': r'"page" must be a 1-based integer, got "7"',
    '{"query": "q", "pdf": "a.pdf"}': r'"pdf" needs a 1-based integer "page"',
    '{"query": "q"}': r'give the page as "image": PATH or "pdf": PATH',
    '{"query": "q", "image": "a.png", "pdf": "a.pdf", "page": 1}': r'either "image" or "pdf", not both',
    '{"query": "q", "image": "a.png", "negative": []}':
        r'unknown key "negative"; the known keys are "qid", "query", .*"negatives"',
    '{"query": "q", "image": "a.png", "negatives": {"image": "b.png"}}': r'"negatives" must be a list',
    '{"query": "q", "image": "a.png", "negatives": [{"pdf": "b.pdf"}]}':
        r'negatives\[0\]: "pdf" needs a 1-based integer "page"',
    '{"query": "q", "image": "a.png", "negatives": [{"image": "b.png", "map": "k"}]}':
        r'negatives\[0\]: unknown key "map"',
    '{"query": "q", "image": "a.png", "map": 3}': r'"map" must be a teacher-map key',
    '{"query": "q", "image": "a.png", "synthetic": "yes"}': r'"synthetic" must be true or false',
}


@pytest.mark.parametrize("line", BAD)
def test_malformed_line_names_file_and_line(tmp_path, line):
    data = write_lines(tmp_path / "train.jsonl", {"query": "fine", "image": "a.png"}, line)
    with pytest.raises(DataError, match=rf"^train\.jsonl:2: .*{BAD[line]}"):
        read_examples(data)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="holds no training examples"):
        read_examples(write_lines(tmp_path / "empty.jsonl", "", "  "))


def test_check_files_names_each_missing_file_once(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "here.png")
    data = write_lines(tmp_path / "t.jsonl",
                       {"query": "a", "image": "here.png", "negatives": [{"image": "gone.png"}]},
                       {"query": "b", "pdf": "gone.pdf", "page": 2},
                       {"query": "c", "image": "gone.png"})
    assert check_files(read_examples(data)) == [
        f"{tmp_path}/gone.png: image not found (lines 1, 3)",
        f"{tmp_path}/gone.pdf: PDF not found (line 2)",
    ]


# -- pages ------------------------------------------------------------------------------------
def test_page_loader_pdf_and_image(tmp_path):
    pdf = make_pdf(tmp_path / "doc.pdf", ["first page words", "second page revenue table"])
    Image.new("RGB", (60, 80), "white").save(tmp_path / "shot.png")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (tmp_path / "text.png").write_text("not an image")
    loader = PageLoader(render=True, dpi=30, cache_size=2)
    page = loader.load(PageRef(pdf=pdf, page=2))
    assert (page.source, page.page_no, page.from_pdf) == (pdf, 2, True)
    assert page.image.size == (255, 330) and "revenue" in page.text  # letter at 30 dpi
    assert loader.load(PageRef(pdf=pdf, page=2)) is page  # cached
    shot = loader.load(PageRef(image=tmp_path / "shot.png"))
    assert (shot.from_pdf, shot.image.size, shot.words) == (False, (60, 80), [])
    loader.load(PageRef(pdf=pdf, page=1))  # evicts page 2 (least recently used)
    assert loader.load(PageRef(pdf=pdf, page=2)) is not page
    text_only = PageLoader(render=False).load(PageRef(pdf=pdf, page=1))
    assert text_only.image is None and text_only.text == "first page words"
    for ref, message in [(PageRef(pdf=pdf, page=3), "doc.pdf: has 2 pages, there is no page 3"),
                         (PageRef(pdf=tmp_path / "broken.pdf", page=1), "broken.pdf: corrupt"),
                         (PageRef(pdf=tmp_path / "nope.pdf", page=1), "nope.pdf: file not found"),
                         (PageRef(image=tmp_path / "nope.png"), "nope.png: image file not found"),
                         (PageRef(image=tmp_path / "text.png"), "text.png: not a readable image")]:
        with pytest.raises(DataError, match=message):
            loader.load(ref)


def test_map_cache_find(tmp_path):
    with MapCache(tmp_path / "maps", TeacherConfig(model="a")) as cache:
        cache.add("k1", torch.rand(2, 3), qid="q1", query="revenue?", page_digest="d1",
                  source="/data/a.pdf", page=4)
        cache.add("k2", torch.rand(2, 3), qid="q2", query="revenue?", page_digest="d2",
                  source="/data/p.png", page=1)
        cache.flush()
        assert cache.find("revenue?", "/data/a.pdf", 4) == "k1"
    again = MapCache(tmp_path / "maps")
    assert again.find("revenue?", Path("/data/p.png"), 1) == "k2"
    assert again.find("revenue?", "/data/a.pdf", 3) is None
    assert again.find("other", "/data/a.pdf", 4) is None


# -- converter ---------------------------------------------------------------------------------
def test_convert_cli_end_to_end(tmp_path, sample_index, samples):
    index = tmp_path / "index"
    copy_index(sample_index, index)
    report, slides, _ = samples
    queries = write_lines(
        tmp_path / "q.jsonl",
        {"qid": "solar", "query": "Which solar site produced the most electricity?",
         "source": str(report), "page": 3},
        {"query": "cloud migration risks and schedule",
         "positives": [{"source": os.path.relpath(slides, tmp_path), "page": 3},
                       {"source": str(slides), "page": 4}]},
    )
    out = tmp_path / "train.jsonl"
    done = cli("dataset", "convert", str(queries), "--index", str(index), "--out", str(out),
               "--hard-negatives", "2")
    assert done.returncode == 0, done.stderr
    assert "wrote 3 examples for 2 queries" in done.stderr and "6 hard negatives" in done.stderr
    examples = read_examples(out)
    assert [(e.qid, e.page.pdf, e.page.page) for e in examples] == [
        ("solar", report, 3), (2, slides, 3), (2, slides, 4)]
    assert all(len(e.negatives) == 2 for e in examples)
    assert (report, 3) not in {(n.pdf, n.page) for n in examples[0].negatives}
    assert not {(slides, 3), (slides, 4)} & {(n.pdf, n.page) for e in examples[1:] for n in e.negatives}
    assert check_files(examples) == []

    bad = write_lines(tmp_path / "bad.jsonl", {"query": "q", "source": str(report), "page": 3},
                      {"query": "q", "source": str(report), "page": 9},
                      {"query": "q", "source": "other.pdf", "page": 1})
    failed = cli("dataset", "convert", str(bad), "--index", str(index), "--out", str(tmp_path / "x"))
    assert failed.returncode == 2 and not (tmp_path / "x").exists()
    assert "bad.jsonl:2: page 9 of " in failed.stderr and "(the file has 3 pages)" in failed.stderr
    assert "bad.jsonl:3: page 1 of " in failed.stderr and "the file is not indexed" in failed.stderr
    typo = write_lines(tmp_path / "typo.jsonl", {"query": "q", "src": "a.pdf", "page": 1})
    failed = cli("dataset", "convert", str(typo), "--index", str(index), "--out", str(tmp_path / "x"))
    assert failed.returncode == 2 and 'typo.jsonl:1: unknown key "src"' in failed.stderr


# -- synthesis --------------------------------------------------------------------------------
def test_parse_questions():
    text = ("Here are three questions:\n1. What was the revenue in 2023?\n2) What was the revenue "
            "in 2023?\n- **Which site produced the most solar power?**\n\n* Q3: battery capacity "
            "installed at the plant\nAnswer: 12 MW\nwhy\n")
    assert parse_questions(text) == ["What was the revenue in 2023?",
                                     "Which site produced the most solar power?",
                                     "battery capacity installed at the plant"]
    assert parse_questions(text, 2) == ["What was the revenue in 2023?",
                                        "Which site produced the most solar power?"]
    assert parse_questions("ok\n\n") == []


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    from agree_core.encoders.colvision.testing import save_tiny_teacher

    return save_tiny_teacher("colqwen2.5", tmp_path_factory.mktemp("teacher") / "qwen2_5")


class CannedWriter(QuestionWriter):
    """The real writer's parsing, with a model that always writes the same text."""

    def generate(self, image, k):
        assert image.size[0] > 0
        return "1. What does the chart compare?\n2. What does the chart compare?\n3. revenue by quarter table"


def test_synthesis_writes_training_lines_and_resumes(tmp_path, tiny_teacher):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    make_pdf(pdfs / "a.pdf", ["one", "two", "three"])
    make_pdf(pdfs / "b.pdf", ["four", "five"])
    (pdfs / "broken.pdf").write_text("not a pdf")
    real = QuestionWriter(str(tiny_teacher), max_new_tokens=8, max_image_tokens=16)
    raw = real.generate(Image.new("RGB", (90, 120), "white"), 3)  # random weights: garbage text
    assert isinstance(raw, str) and real.model.dtype == torch.float32
    out = tmp_path / "train.jsonl"
    writer = CannedWriter(str(tiny_teacher))
    report = synthesize([pdfs], out, writer, pages=3, per_page=2, seed=7, dpi=20, progress=False)
    assert (report.pages, report.new_pages, report.written) == (3, 3, 6)
    assert len(report.skipped) == 1 and "broken.pdf: not a PDF file" in report.skipped[0]
    examples = read_examples(out)
    assert [e.query for e in examples[:2]] == ["What does the chart compare?", "revenue by quarter table"]
    assert all(str(e.qid).startswith("syn-") and str(e.qid).endswith(("-1", "-2")) for e in examples)
    assert check_files(examples) == []
    with open(out, "a") as f:
        f.write('{"qid": "syn-torn')  # killed mid-line
    again = synthesize([pdfs], out, writer, pages=4, per_page=2, seed=7, dpi=20, progress=False)
    assert (again.done, again.new_pages) == (3, 1)  # the same seed draws the same 3 pages first
    assert len(read_examples(out)) == 8


def test_synthesize_cli_runs_the_model(tmp_path, tiny_teacher):
    make_pdf(tmp_path / "doc.pdf", ["a page about revenue"])
    out = tmp_path / "syn.jsonl"
    done = cli("dataset", "synthesize", str(tmp_path / "doc.pdf"), "--out", str(out), "--model",
               str(tiny_teacher), "--pages", "1", "--per-page", "2", "--max-new-tokens", "8",
               "--max-image-tokens", "16", "--dpi", "20", "--device", "cpu")
    # random weights write what they write: a question (exit 0) or nothing usable (exit 3)
    assert done.returncode in (0, 3), done.stderr
    if done.returncode == 3:
        assert "the model wrote no question" in done.stderr
    else:
        assert read_examples(out)
    bad = cli("dataset", "synthesize", str(tmp_path), "--out", str(out), "--pages", "0")
    assert bad.returncode == 2 and "--pages and --per-page must be >= 1" in bad.stderr
