"""Teacher maps: lean attention equals output_attentions, grid alignment, the map cache."""

from __future__ import annotations

import json
import math

import pytest
import torch

from agree_core.pages import Page
from agree_core.teacher import MapCache, QwenVLTeacher, TeacherConfig, align_to_grid, page_digest
from agree_core.teacher.build import build_maps, read_examples
from conftest import run_cli
from visual.images import noise_image


@pytest.fixture(scope="module")
def teacher(teachers):
    return QwenVLTeacher(str(teachers["colqwen2.5"]), device="cpu")


# -- the maps ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["colqwen2.5", "colqwen2"])
@pytest.mark.parametrize("variant", ["query", "answer"])
def test_lean_map_equals_output_attentions(teachers, family, variant):
    t = QwenVLTeacher(str(teachers[family]), variant=variant, device="cpu")
    image = noise_image(230, 300)
    lean = t.map("what is the revenue growth", image)
    reference = t.map("what is the revenue growth", image, lean=False)
    assert lean.shape == (11, 8)  # smart_resize(300, 230) -> 308 x 224 px: 22 x 16 patches, 2x2 merged
    torch.testing.assert_close(lean, reference, atol=1e-6, rtol=1e-5)
    if variant == "query":
        assert (lean > 0).all() and lean.sum() < 1  # attention mass on image tokens, averaged


def test_layer_selection(teachers):
    image = noise_image(100, 100)
    every = QwenVLTeacher(str(teachers["colqwen2.5"]), device="cpu")
    first = QwenVLTeacher(str(teachers["colqwen2.5"]), layers=[0], device="cpu")
    last = QwenVLTeacher(str(teachers["colqwen2.5"]), layers=[-1], device="cpu")
    maps = [t.map("revenue", image) for t in (every, first, last)]
    torch.testing.assert_close(maps[0], (maps[1] + maps[2]) / 2)
    torch.testing.assert_close(last.map("revenue", image, lean=False), maps[2], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"layers must be in -2..1 \(the teacher has 2 text layers\)"):
        QwenVLTeacher(str(teachers["colqwen2.5"]), layers=[5], device="cpu").map("revenue", image)


def test_query_rows_are_the_query_tokens_only(teacher):
    teacher.model  # noqa: B018 - loads the tokenizer too
    head, text, tail = teacher._ids("revenue growth")
    tok = teacher._tokenizer
    assert tok.decode(text) == "revenue growth"
    assert tok.decode(head).endswith("<|im_start|>user\n<|vision_start|>")
    assert tok.decode(tail) == "<|im_end|>\n<|im_start|>assistant\n"


def test_bad_teacher_inputs(teachers, checkpoints, tmp_path):
    with pytest.raises(ValueError, match="variant must be 'query' or 'answer'"):
        QwenVLTeacher(str(teachers["colqwen2.5"]), variant="cls")
    with pytest.raises(ValueError, match="holds a 'paligemma' model; the teacher must be Qwen2.5-VL"):
        QwenVLTeacher(str(checkpoints["colpali"][1])).model
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="is not a teacher checkpoint: no config.json"):
        QwenVLTeacher(str(tmp_path / "x")).model
    from PIL import Image

    t = QwenVLTeacher(str(teachers["colqwen2.5"]), device="cpu")
    with pytest.raises(ValueError, match="empty"):
        t.map("q", Image.new("RGB", (0, 3)))
    with pytest.raises(ValueError, match="non-empty string"):
        t.map("", noise_image(60, 60))


# -- alignment --------------------------------------------------------------------------------
def _align_by_hand(a: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    h, w = a.shape
    out = torch.empty(rows, cols)
    for i in range(rows):
        for j in range(cols):
            r0, r1 = math.floor(i * h / rows), math.ceil((i + 1) * h / rows)
            c0, c1 = math.floor(j * w / cols), math.ceil((j + 1) * w / cols)
            out[i, j] = a[r0:r1, c0:c1].max()
    return out


@pytest.mark.parametrize("shape,grid", [((22, 16), (32, 32)), ((44, 34), (36, 28)), ((8, 6), (4, 3)),
                                        ((5, 7), (5, 7)), ((3, 3), (1, 1))])
def test_align_to_grid_matches_the_window_formula(shape, grid):
    a = torch.rand(shape)
    torch.testing.assert_close(align_to_grid(a, grid), _align_by_hand(a, *grid))


def test_align_to_a_retriever_grid(encoders, teacher):
    image = noise_image(230, 300)
    emb = encoders["colpali"].encode_pages([Page.from_image(image)])[0]
    aligned = align_to_grid(teacher.map("revenue", image), emb.grid)
    assert aligned.shape == emb.grid and aligned.flatten().shape[0] == int((emb.cells >= 0).sum())
    with pytest.raises(ValueError, match="2-D"):
        align_to_grid(torch.rand(6), (2, 3))


# -- the cache --------------------------------------------------------------------------------
def write_data(tmp_path, n: int) -> list:
    (tmp_path / "pages").mkdir()
    lines = []
    for i in range(n):
        noise_image(80 + 10 * i, 90, seed=i).save(tmp_path / "pages" / f"p{i}.png")
        lines.append(json.dumps({"qid": f"q{i}", "query": f"query number {i}", "image": f"pages/p{i}.png"}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    return read_examples(tmp_path / "data.jsonl")


def test_cache_resumes_after_an_interruption(teacher, tmp_path):
    examples = write_data(tmp_path, 5)
    out = tmp_path / "maps"
    done = []

    def die_after_three(ex):
        done.append(ex.qid)
        if len(done) == 3:
            raise KeyboardInterrupt  # killed mid-run: shards of 2 maps, the third in flight

    with pytest.raises(KeyboardInterrupt):
        build_maps(examples, out, teacher, shard_size=2, progress=False, on_map=die_after_three)
    with open(out / "manifest-r0.jsonl", "a") as f:
        f.write('{"key": "torn')  # a line cut short by the kill
    (out / "maps-r0-00007.safetensors").write_bytes(b"orphan: no manifest line names it")
    assert len(MapCache(out)) == 3  # the buffered map was flushed on the way out
    report = build_maps(examples, out, teacher, shard_size=2, progress=False)
    assert (report.cached, report.computed, report.skipped) == (3, 2, [])
    cache = MapCache(out)
    assert len(cache) == 5 and {r["qid"] for r in cache.records()} == {f"q{i}" for i in range(5)}
    image = noise_image(80, 90, seed=0)
    torch.testing.assert_close(cache.get("query number 0", page_digest(image)),
                               teacher.map("query number 0", image))
    assert cache.get("another query", page_digest(image)) is None
    again = build_maps(examples, out, teacher, progress=False)
    assert (again.cached, again.computed) == (5, 0)


def test_cache_ranks_share_one_directory(teacher, tmp_path):
    examples = write_data(tmp_path, 5)
    out = tmp_path / "maps"
    r0 = build_maps(examples, out, teacher, rank=0, world_size=2, progress=False)
    r1 = build_maps(examples, out, teacher, rank=1, world_size=2, progress=False)
    assert (r0.computed, r1.computed) == (3, 2)
    assert sorted(p.name for p in out.glob("manifest-*")) == ["manifest-r0.jsonl", "manifest-r1.jsonl"]
    alone = build_maps(examples, out, teacher, progress=False)  # resumed with one process
    assert (alone.cached, alone.computed) == (5, 0)


def test_cache_refuses_another_teacher_config(tmp_path):
    MapCache(tmp_path / "c", TeacherConfig(model="a")).close()
    with pytest.raises(ValueError, match="another teacher config \\(differs in variant\\)"):
        MapCache(tmp_path / "c", TeacherConfig(model="a", variant="answer"))
    with pytest.raises(ValueError, match="not a teacher-map cache"):
        MapCache(tmp_path / "nothing")


def test_bad_data_lines(tmp_path):
    bad = {'{"image": "a.png"}': 'needs a non-empty "query"',
           '{"query": "q", "pdf": "a.pdf"}': '"pdf" needs a 1-based integer "page"',
           '{"query": "q"}': 'give the page as "image"',
           'not json': "not a JSON object"}
    for line, message in bad.items():
        (tmp_path / "d.jsonl").write_text(line + "\n")
        with pytest.raises(ValueError, match=f"d.jsonl:1: .*{message}"):
            read_examples(tmp_path / "d.jsonl")


def test_cli_teacher_build(teachers, tmp_path, pdf_factory):
    write_data(tmp_path, 2)
    pdf = pdf_factory("doc.pdf", ["page one text", "page two text"])
    with open(tmp_path / "data.jsonl", "a") as f:
        f.write(json.dumps({"query": "page two", "pdf": pdf.name, "page": 2}) + "\n")
        f.write(json.dumps({"query": "missing", "image": "pages/none.png"}) + "\n")
    args = ["teacher", "build", str(tmp_path / "data.jsonl"), "--out", str(tmp_path / "maps"),
            "--teacher", str(teachers["colqwen2"]), "--max-image-tokens", "64", "--dpi", "30"]
    first = run_cli(*args)
    assert first.returncode == 3, first.stderr  # one line skipped, the others built
    assert "skipped: line 4: " in first.stderr and "image file not found" in first.stderr
    assert "3 computed, 0 already cached, 1 skipped" in first.stderr
    again = run_cli(*args)
    assert "0 computed, 3 already cached" in again.stderr
    cache = MapCache(tmp_path / "maps")
    assert all(r["grid"][0] * r["grid"][1] <= 64 for r in cache.records())
    assert cache.teacher.max_image_tokens == 64
