"""`agree eval`: its three input forms (a contract), the metrics it prints, and bad inputs."""

import json

import pytest

from conftest import cli, lorem_pages, marker


@pytest.fixture(scope="module")
def zoo_index(tmp_path_factory, encoder):
    """zoo.pdf: 6 pages, page i the only one with the word marker(i)."""
    from agree_core.index import PageIndex
    from conftest import make_pdf

    root = tmp_path_factory.mktemp("eval")
    make_pdf(root / "zoo.pdf", lorem_pages(6, "zoo"))
    directory = root / "index"
    with PageIndex.open(directory, encoder) as index:
        assert index.add([root / "zoo.pdf"], progress=False).ok
    return directory


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_inline_labels_through_the_cli(zoo_index, tmp_path):
    queries = _write_jsonl(tmp_path / "q.jsonl", [
        {"qid": "a", "query": marker(1), "type": "keyword", "relevant": ["zoo:1"]},
        # page 1 wins this query, so the labelled page 2 is never first
        {"qid": "b", "query": marker(1), "type": "paraphrase", "relevant": [{"doc": "zoo.pdf", "page": 2}]},
        {"qid": "c", "query": "no label here"},
    ])
    out = cli("eval", "--index", str(zoo_index), str(queries), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["queries"] == 2 and report["unlabelled"] == ["c"]
    assert report["metrics"]["ndcg@1"] == 0.5 and report["metrics"]["recall@10"] == 1.0
    assert report["by_type"]["keyword"]["metrics"]["mrr@10"] == 1.0
    paraphrase = report["by_type"]["paraphrase"]["metrics"]
    assert paraphrase["ndcg@1"] == 0.0 and 0 < paraphrase["mrr@10"] <= 0.5
    table = cli("eval", "--index", str(zoo_index), str(queries))
    assert table.returncode == 0, table.stderr
    header, overall, *types = table.stdout.splitlines()
    assert header.split()[:4] == ["type", "queries", "ndcg@1", "ndcg@5"]
    assert overall.split()[:3] == ["all", "2", "0.500"]
    assert [t.split()[0] for t in types] == ["keyword", "paraphrase"]


def test_beir_qrels_tsv(zoo_index, tmp_path):
    from agree_core.evaluation import evaluate_index, load_queries
    from agree_core.index import PageIndex

    queries = _write_jsonl(tmp_path / "q.jsonl", [{"qid": f"q{i}", "query": marker(i)} for i in (2, 3)])
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq2\tzoo:2\t1\nq3\tzoo:3\t2\nq3\tzoo:9\t1\nq2\tzoo:4\t0\n")
    loaded = load_queries(queries, qrels)
    assert [sorted(map(str, q.relevant)) for q in loaded] == [["zoo:2"], ["zoo:3", "zoo:9"]]
    with PageIndex.open(zoo_index, create=False) as index:
        report = evaluate_index(index, loaded)
    assert report.metrics["ndcg@1"] == 1.0
    assert report.missing_pages == ["zoo:9"]  # zoo.pdf has 6 pages: counted, never found
    assert report.metrics["recall@10"] == 0.75


def test_vidore_parquet_folder(zoo_index, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from agree_core.evaluation import evaluate_index, load_queries
    from agree_core.index import PageIndex

    folder = tmp_path / "vidore"
    for sub, rows in {
        "queries": [{"query_id": 0, "query": marker(4), "query_types": ["keyword", "table"]},
                    {"query_id": 1, "query": marker(5), "query_types": ["keyword"]}],
        "qrels": [{"query_id": 0, "corpus_id": 10, "score": 1}, {"query_id": 1, "corpus_id": 11, "score": 1}],
        "corpus": [{"corpus_id": 10, "doc_id": "zoo.pdf", "page_number_in_doc": 3, "image": b"x"},
                   {"corpus_id": 11, "doc_id": "zoo.pdf", "page_number_in_doc": 4, "image": b"x"}],
    }.items():
        (folder / sub).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), folder / sub / "test-00000-of-00001.parquet")
    queries = load_queries(folder)
    assert [(q.qid, q.types, list(map(str, q.relevant))) for q in queries] == [
        ("0", ("keyword", "table"), ["zoo:4"]), ("1", ("keyword",), ["zoo:5"])]
    with PageIndex.open(zoo_index, create=False) as index:
        report = evaluate_index(index, queries)
    assert report.metrics["ndcg@1"] == 1.0
    assert {t: v["queries"] for t, v in report.by_type.items()} == {"keyword": 2, "table": 1}


@pytest.mark.parametrize("content, qrels, message", [
    ('{"qid": "a", "query": "x", "relevant": ["zoo"]}\n', None, "does not name a page as FILE_STEM:PAGE"),
    ('{"qid": "a", "query": "x", "relevant": [{"doc": "zoo.pdf", "page": 0}]}\n', None, "page >= 1"),
    ('{"qid": "a", "query": "x"}\n{"qid": "a", "query": "y"}\n', None, "qid 'a' appears twice"),
    ("not json\n", None, "q.jsonl:1: not a JSON object"),
    ('{"qid": "a", "query": "x"}\n', "qid\tdoc\tscore\na\tzoo:1\t1\n", "starts with the header"),
    ('{"qid": "a", "query": "x"}\n', "query-id\tcorpus-id\tscore\na\tzoo:1\thigh\n", "is not a number"),
    ('{"qid": "a", "query": "x"}\n', None, "no query has a relevant page"),
])
def test_bad_inputs_are_usage_errors(zoo_index, tmp_path, caplog, content, qrels, message):
    from agree_core.cli import main

    queries = tmp_path / "q.jsonl"
    queries.write_text(content)
    args = ["eval", "--index", str(zoo_index), str(queries)]
    if qrels is not None:
        (tmp_path / "qrels.tsv").write_text(qrels)
        args += ["--qrels", str(tmp_path / "qrels.tsv")]
    assert main(args) == 2
    assert message in caplog.text
