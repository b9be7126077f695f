"""``agree dataset from-parquet``: Hugging Face parquet -> training JSONL + page images. No network."""

from __future__ import annotations

import io
import json

import pytest
from conftest import cli
from PIL import Image

from agree_core.training.data import DataError, read_examples
from agree_core.training.parquet import find_parquet, from_parquet

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def image_bytes(fmt: str, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = image_bytes("PNG", (200, 0, 0)), image_bytes("JPEG", (0, 0, 200))
PNG2 = image_bytes("PNG", (0, 90, 0))
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_parquet(path, rows: list[tuple], row_group_size: int = 2):
    """rows: (query, image bytes or None, source); HF's image struct, as colpali_train_set has it."""
    table = pa.table({
        "query": pa.array([q for q, _, _ in rows], pa.string()),
        "image": pa.array([None if b is None else {"bytes": b, "path": None} for _, b, _ in rows], IMAGE),
        "source": pa.array([s for _, _, s in rows], pa.string()),
        "answer": pa.array([f"answer {i}" for i in range(len(rows))], pa.string()),
        "page": pa.array([str(i) for i in range(len(rows))], pa.string()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.fixture
def dataset(tmp_path):
    """A snapshot folder like `huggingface-cli download`: two train files and one test file."""
    data = tmp_path / "hf" / "data"
    write_parquet(data / "train-00000-of-00002.parquet", [
        ("What is the revenue?", PNG, "docvqa"),
        ("Who signed the letter?", PNG, "docvqa"),           # same page as row 0
        ("Which chart shows growth?", JPEG, "arxivqa"),
    ])
    write_parquet(data / "train-00001-of-00002.parquet", [
        ("", PNG2, "tatdqa"),                                  # empty query
        ("What is broken?", b"\x89PNG not really a png", "tatdqa"),  # corrupt bytes
        ("No page at all?", None, "tatdqa"),                  # missing image
        ("Where is the green page?", PNG2, "infovqa"),
    ])
    write_parquet(data / "test-00000-of-00001.parquet", [("A test question?", JPEG, "test")])
    (tmp_path / "hf" / ".cache").mkdir()
    write_parquet(tmp_path / "hf" / ".cache" / "stale.parquet", [("hidden", PNG, "x")])
    return data


def images(out):
    return sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file())


def test_from_parquet_writes_examples_and_each_image_once(dataset, tmp_path):
    out = tmp_path / "colpali_train_set"
    report = from_parquet(dataset, out, split_name="train", progress=False)
    assert (report.rows, report.examples, report.images_written, report.images_reused) == (7, 4, 3, 1)
    train1 = str(dataset / "train-00001-of-00002.parquet")
    assert [(f, r) for f, r, _ in report.skipped] == [(train1, 0), (train1, 1), (train1, 2)]
    reasons = [reason for _, _, reason in report.skipped]
    assert reasons[0] == "empty 'query'" and "Pillow cannot read" in reasons[1]
    assert reasons[2] == "no image in 'image'"

    examples = read_examples(out / "train.jsonl")
    assert [e.query for e in examples] == ["What is the revenue?", "Who signed the letter?",
                                           "Which chart shows growth?", "Where is the green page?"]
    assert [e.qid for e in examples] == ["colpali_train_set-000000", "colpali_train_set-000001",
                                         "colpali_train_set-000002", "colpali_train_set-000006"]
    assert examples[0].page.image == examples[1].page.image  # one file for the shared page
    assert [e.page.image.suffix for e in examples] == [".png", ".png", ".jpg", ".png"]
    for e, data in zip(examples, (PNG, PNG, JPEG, PNG2)):
        assert e.page.image.read_bytes() == data  # unchanged, not re-encoded
        assert e.page.image.parent.name == e.page.image.stem[:2]
    assert len(images(out)) == 3 and not list(out.glob("*.tmp"))
    line = json.loads((out / "train.jsonl").read_text().splitlines()[2])
    assert line["image"].startswith("images/") and line["meta"] == {"source": "arxivqa", "answer": "answer 2"}
    assert not (out / "test.jsonl").exists()  # the test file in the same folder is not train data


def test_rerun_is_idempotent_and_limit_stops_early(dataset, tmp_path):
    out = tmp_path / "out"
    from_parquet(dataset, out, progress=False)
    first, files = (out / "train.jsonl").read_bytes(), images(out)
    mtimes = [(out / p).stat().st_mtime_ns for p in files]
    (out / "train.jsonl.tmp").write_text("left by an interrupted run\n")
    again = from_parquet(dataset, out, progress=False)
    assert (out / "train.jsonl").read_bytes() == first and images(out) == files
    assert [(out / p).stat().st_mtime_ns for p in files] == mtimes
    assert (again.examples, again.images_written, again.images_reused) == (4, 0, 4)
    assert not (out / "train.jsonl.tmp").exists()

    short = from_parquet(dataset, out, limit=2, progress=False)
    assert (short.rows, short.examples) == (2, 2) and len(read_examples(out / "train.jsonl")) == 2


def test_split_files_and_explicit_files(dataset, tmp_path):
    assert [p.name for p in find_parquet([dataset], "test")] == ["test-00000-of-00001.parquet"]
    assert [p.name for p in find_parquet([dataset.parent])] == [  # .cache/ skipped, no split filter
        "test-00000-of-00001.parquet", "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    report = from_parquet(dataset, tmp_path / "d", split_name="test", progress=False)
    assert report.examples == 1 and read_examples(tmp_path / "d" / "test.jsonl")[0].qid == "d-test-000000"
    with pytest.raises(DataError, match=r"holds the splits test, train and none is named 'eval'"):
        find_parquet([dataset], "eval")
    report = from_parquet(dataset / "test-00000-of-00001.parquet", tmp_path / "d", split_name="eval",
                          progress=False)  # files named explicitly: any split name
    assert report.examples == 1 and report.images_reused == 1  # the JPEG written by the test run


def test_clear_errors(dataset, tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such file or folder"):
        from_parquet(tmp_path / "nowhere", tmp_path / "o", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no parquet files in .*empty"):
        from_parquet(tmp_path / "empty", tmp_path / "o", progress=False)
    with pytest.raises(DataError, match=r"no column 'question'; the file has query, image, source, "
                                        r"answer, page \(choose the column with --query-column\)"):
        from_parquet(dataset, tmp_path / "o", query_column="question", progress=False)
    with pytest.raises(DataError, match=r"no column 'page_image'.*--image-column"):
        from_parquet(dataset, tmp_path / "o", image_column="page_image", progress=False)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match=r"bad.parquet: not a readable parquet file"):
        from_parquet(bad, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()  # nothing written before the inputs were checked
    with pytest.raises(ValueError, match=r"limit must be >= 1"):
        from_parquet(dataset, tmp_path / "o", limit=0)


def test_cli(dataset, tmp_path):
    out = tmp_path / "ds"
    clean = cli("dataset", "from-parquet", str(dataset / "train-00000-of-00002.parquet"),
                "--out", str(out), "--split", "train")
    assert clean.returncode == 0, clean.stderr
    assert "wrote 3 examples" in clean.stderr and "2 images written, 1 reused" in clean.stderr
    skipped = cli("-q", "dataset", "from-parquet", str(dataset), "--out", str(out))
    assert skipped.returncode == 3, skipped.stderr
    assert "train-00001-of-00002.parquet row 1: image bytes Pillow cannot read" in skipped.stderr
    assert skipped.stderr.count("skipped: ") == 3 and len(read_examples(out / "train.jsonl")) == 4
    bad = cli("dataset", "from-parquet", str(dataset), "--out", str(out), "--query-column", "q")
    assert bad.returncode == 2 and "no column 'q'" in bad.stderr and "--query-column" in bad.stderr
    missing = cli("dataset", "from-parquet", str(tmp_path / "nope"), "--out", str(out))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
