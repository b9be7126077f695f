"""The ``agree`` command: index PDFs, search them, show why pages matched.

Exit codes (stable, for scripts):
    0  success
    1  an error (the message says what and how to fix it)
    2  bad command-line usage, or a malformed input file (``agree dataset``: the line is named)
    3  ``agree index``/``agree teacher build``/``agree dataset synthesize``/``from-parquet``: some
       inputs were skipped (each named on stderr)
    4  the index is busy: another process holds it (see ``--wait``)
    5  not an agree index, or an encoder that does not match the index
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from agree_core import cli_encoders

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_BUSY, EXIT_CONFIG = 0, 1, 2, 3, 4, 5

log = logging.getLogger("agree")


def _index_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--index", required=required, metavar="DIR|URL",
                   help="the index: a directory (created by `agree index` on first use), "
                        "http://HOST:PORT for an index that `agree serve` holds, "
                        "qdrant://HOST:PORT/COLLECTION (qdrants:// for TLS, API key from "
                        "QDRANT_API_KEY) or qdrant-local:PATH")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS while another process holds the index "
                        "(default 0: fail at once with exit code 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agree",
        description="Visual-document retrieval with late interaction (MaxSim): index PDFs as "
                    "pages, search them, and see why a page matched.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 some files or pages skipped, 4 index busy, "
               "5 not an index or encoder mismatch.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="add PDF files or folders to an index (idempotent)",
                       description="Add PDFs to an index. Folders are searched recursively for "
                                   "*.pdf. Unchanged files are skipped, changed files replace "
                                   "their pages, an interrupted run resumes. Files that cannot "
                                   "be read are named on stderr and the others go on (exit 3).")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="PDF files and folders; with --index http://..., absolute paths on the "
                        "server's disk (under its --allow-dir), or with --upload files of this machine")
    _index_arg(p)
    p.add_argument("--upload", action="store_true",
                   help="with --index http://...: send these files (and the PDFs under these folders) "
                        "from this machine to the server, which keeps them in its upload folder")
    p.add_argument("--encoder", default=None, metavar="NAME",
                   help="encoder for a new index: text-layer (default), colqwen2.5, colqwen2, "
                        "colpali, or NAME:CHECKPOINT (a path or hub id, e.g. a fine-tuned "
                        "adapter); an existing index keeps its own encoder and rejects a different one")
    p.add_argument("--dpi", type=int, default=100, help="resolution of stored page images (default 100)")
    p.add_argument("--batch-size", type=int, default=16, help="pages encoded together (default 16)")
    p.add_argument("--pool-factor", type=int, default=None, metavar="N",
                   help="a new index stores about 1/N of each page's vectors, merged by hierarchical "
                        "pooling (default: 5 for the text-layer encoder, with turbo4 about 25 KB a page at "
                        "float16's nDCG@5; 1, every vector, for other encoders; BENCHMARKS.md has the bytes "
                        "against quality)")
    p.add_argument("--vector-datatype", default=None, choices=["float32", "float16", "turbo8", "turbo4"],
                   help="how a new index stores vectors (default turbo4: Qdrant's 4-bit TurboQuant "
                        "codes, servers from 1.19; turbo8 needs 1.20; float16 was the default before)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata for these documents, usable as a search filter (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--page-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="stop a page that takes longer than SECONDS to render or OCR, name it "
                        "and go on (default 300)")
    p.add_argument("--report", default=None, metavar="FILE.jsonl",
                   help='write one JSON line per skipped file or failed page: {"source", "page", '
                        '"code", "message"} ("page" is null for a whole file)')

    p = sub.add_parser("search", help="rank pages for a query, or for many queries",
                       description="Rank the index's pages for QUERY, or for each query in "
                                   "--queries FILE (one per line, or JSONL with qid and query).")
    p.add_argument("query", nargs="?", help="the question")
    _index_arg(p)
    p.add_argument("-k", "--top-k", type=int, default=5, dest="k", help="pages per query (default 5)")
    p.add_argument("--queries", metavar="FILE", help="many queries in one process")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per query: {"qid", "query", "hits": [{"source", "page", '
                        '"score", "image"}]}')
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="only pages whose KEY (source, page or a --meta key) equals VALUE (repeatable)")
    p.add_argument("--candidates", type=int, default=None,
                   help="pages the first stage keeps for exact rescoring (default: exact search up "
                        "to 2,000 pages; above, 300 through the encodings, 800 through the centroid "
                        "scan of an index without them)")
    p.add_argument("--rerank", metavar="MODEL[:CKPT]", default=None,
                   help="rerank with a multimodal reranker that reads query and page image (jina-m0)")
    p.add_argument("--rerank-top", type=int, default=20, metavar="N",
                   help="first-stage pages the reranker reads per query (default 20)")

    p = sub.add_parser("show", help="write a PNG of the top pages with the boxes of why they matched")
    p.add_argument("query", help="the question")
    _index_arg(p)
    p.add_argument("-k", "--top-k", type=int, default=3, dest="k", help="pages to draw (default 3)")
    p.add_argument("--out", default="agree-show.png", help="output PNG (default agree-show.png)")
    p.add_argument("--mode", choices=["maxsim", "mean"], default="maxsim",
                   help="maxsim: the evidence boxes, the words (or patches) the query tokens matched, "
                        "shaded by their share of the score; mean: a heatmap of the mean similarity "
                        "to the whole query (AGREE's patch relevance)")

    p = sub.add_parser("info", help="what an index holds")
    _index_arg(p)
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"encoder", "pages", "documents": [{"source", "pages"}], '
                        '"failed_pages": [{"source", "page", "code", "message"}]}')

    p = sub.add_parser("delete", help="remove documents from an index by path")
    p.add_argument("sources", nargs="+", metavar="PDF",
                   help="paths of indexed PDFs (with --index http://..., absolute paths on the server, "
                        "as `agree info` lists them)")
    _index_arg(p)

    from agree_core.generation.ask import register as register_ask

    register_ask(sub)  # agree ask: agree_core/generation/ask.py
    from agree_core.cli_migrate import register as register_migrate

    register_migrate(sub)
    from agree_core.cli_first_stage import register as register_first_stage

    register_first_stage(sub)

    p = sub.add_parser("eval", help="retrieval quality on labelled queries: nDCG, recall, MRR",
                       description="Run labelled queries through the index's search and print "
                                   "nDCG@1/5/10, recall@5/10 and MRR@10, overall and per query "
                                   "type. QUERIES: a JSONL file ({\"qid\", \"query\", \"type\", "
                                   "\"relevant\": [\"zoo:3\", ...]}) or a ViDoRe/MTEB parquet "
                                   "folder (queries, qrels, corpus); --qrels: a BEIR TSV "
                                   "(query-id, corpus-id, score; corpus-id FILE_STEM:PAGE).")
    p.add_argument("queries", metavar="QUERIES", help="JSONL file or parquet folder")
    _index_arg(p)
    p.add_argument("--qrels", metavar="FILE", help="BEIR-style qrels TSV with a header line")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"queries", "metrics", "by_type", "missing_pages", ...}')
    p.add_argument("--candidates", type=int, default=None,
                   help="first-stage candidates, as for agree search")

    p = sub.add_parser("demo", help="the end-to-end demo: sample PDFs, index, questions, heatmaps")
    p.add_argument("--pdfs", default=None, metavar="DIR",
                   help="your own PDFs instead of the built-in samples")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--question", action="append", default=[], help="a question to ask (repeatable)")
    p.add_argument("--questions", metavar="FILE",
                   help="questions, one per line (default: the samples' own questions, or "
                        "phrases taken from your PDFs' pages)")
    _teacher_parser(sub)
    _dataset_parser(sub)
    cli_encoders.add_parser(sub)
    from agree_core.serve.command import add_parser as _serve_parser

    _serve_parser(sub)
    return parser


def _teacher_parser(sub: Any) -> None:
    p = sub.add_parser("teacher", help="AGREE teacher attention maps for training")
    tsub = p.add_subparsers(dest="teacher_command", required=True, metavar="COMMAND")
    p = tsub.add_parser("build", help="compute and cache teacher maps for a JSONL file (resumable)",
                        description="One JSON object per line: {\"query\": ..., \"image\": PATH} or "
                                    "{\"query\": ..., \"pdf\": PATH, \"page\": N}, optional \"qid\"; "
                                    "paths relative to the file. Rerun to resume; under torchrun "
                                    "each rank takes its share on its own GPU.")
    p.add_argument("data", metavar="DATA.jsonl")
    p.add_argument("--out", required=True, metavar="DIR", help="the map cache directory")
    p.add_argument("--teacher", default=None, metavar="ID_OR_PATH",
                   help="Qwen2.5-VL or Qwen2-VL instruct model (default Qwen/Qwen2.5-VL-7B-Instruct)")
    p.add_argument("--variant", choices=["query", "answer"], default="query",
                   help="query: query tokens -> image (AGREE's default); answer: last token, "
                        "divided by a baseline prompt's")
    p.add_argument("--layers", default=None, metavar="LIST",
                   help="text layers to average, e.g. 0,1,-1 or 20-27 (default all)")
    p.add_argument("--max-image-tokens", type=int, default=2048, help="page image cap (default 2048)")
    p.add_argument("--dpi", type=int, default=150, help="rendering of PDF pages (default 150)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="auto: bfloat16 on CUDA GPUs, float32 on CPU")


def _dataset_parser(sub: Any) -> None:
    p = sub.add_parser("dataset", help="training files: from labelled queries, or synthesised")
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="COMMAND")
    p = dsub.add_parser("convert", help="labelled queries over an index -> a training JSONL file",
                        description="QUERIES.jsonl: one {\"qid\": ..., \"query\": ..., \"source\": PDF, "
                                    "\"page\": N} per line (or \"positives\": [{\"source\", \"page\"}, "
                                    "...]); paths relative to the file. Every labelled page must be "
                                    "in the index; --hard-negatives K adds the index's top K other "
                                    "pages for each query.")
    p.add_argument("queries", metavar="QUERIES.jsonl")
    _index_arg(p)
    p.add_argument("--out", required=True, metavar="FILE", help="the training file to write")
    p.add_argument("--hard-negatives", type=int, default=0, metavar="K",
                   help="hard negatives per query, mined with the index's search (default 0)")
    p = dsub.add_parser("from-parquet", help="a Hugging Face image-retrieval dataset (parquet) -> "
                                             "a training JSONL file and its page images",
                        description="Read parquet files (or folders of them, e.g. a `huggingface-cli "
                                    "download` of vidore/colpali_train_set) and write --out/SPLIT.jsonl "
                                    "plus each distinct page image once under --out/images/. From a "
                                    "folder holding several splits (train-*.parquet, test-*.parquet) "
                                    "only --split's files are read. Rerun to resume; rows without a "
                                    "query or a readable image are named on stderr (exit 3).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="parquet files and folders")
    p.add_argument("--out", required=True, metavar="DIR", help="the output folder")
    p.add_argument("--query-column", default="query", metavar="C", help="the query column (default query)")
    p.add_argument("--image-column", default="image", metavar="C",
                   help="the page image column (default image)")
    p.add_argument("--split", default="train", metavar="NAME",
                   help="writes NAME.jsonl; picks the split in a folder of several (default train)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="read only the first N rows")
    p = dsub.add_parser("synthesize", help="sample pages and have a VLM write the questions they answer",
                        description="Sample pages (seeded) from PDFs and folders, ask a Qwen2.5-VL or "
                                    "Qwen2-VL instruct model for questions each page answers, and "
                                    "append them to --out as training lines (\"synthetic\": true). "
                                    "Rerun to resume; unreadable files are named on stderr (exit 3).")
    p.add_argument("paths", nargs="+", metavar="PDF_OR_DIR")
    p.add_argument("--out", required=True, metavar="FILE", help="the training file to append to")
    p.add_argument("--model", default=None, metavar="ID_OR_PATH",
                   help="Qwen2.5-VL or Qwen2-VL instruct model (default Qwen/Qwen2.5-VL-7B-Instruct)")
    p.add_argument("--pages", type=int, required=True, metavar="N", help="pages to sample")
    p.add_argument("--per-page", type=int, default=3, metavar="K", help="questions per page (default 3)")
    p.add_argument("--seed", type=int, default=0, help="page sampling and generation seed (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=256,
                   help="generation budget per page (default 256)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 decodes greedily (default); above 0 samples")
    p.add_argument("--max-image-tokens", type=int, default=1024, help="page image cap (default 1024)")
    p.add_argument("--dpi", type=int, default=150, help="rendering of PDF pages (default 150)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="auto: bfloat16 on CUDA GPUs, float32 on CPU")


def _pairs(items: Sequence[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(_usage(f"{flag} expects KEY=VALUE, got {item!r}"))
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _usage(message: str) -> int:
    log.error("%s", message)
    return EXIT_USAGE


def _read_queries(path: str) -> list[tuple[Any, str]]:
    queries = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
                queries.append((obj.get("qid", n), str(obj["query"])))
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path}:{n}: expected a JSON object with a \"query\" field ({e})") from e
        else:
            queries.append((n, line.strip()))
    if not queries:
        raise ValueError(f"{path} holds no queries")
    return queries


def cmd_index(args: argparse.Namespace) -> int:
    """`agree index PATH... --index INDEX`. On an index that `agree serve` holds
    (``http://``), PATHs name files on the server's disk: absolute paths under its
    ``--allow-dir`` (a relative path is refused: this shell's working directory says nothing
    of the server's disk); ``--upload`` sends this machine's files instead. A path the server
    refuses that exists here is named with the hint to ``--upload`` it."""
    from agree_core.index import PageIndex
    from agree_core.index.storage import is_served

    if args.page_timeout <= 0:
        return _usage(f"--page-timeout must be > 0 seconds, got {args.page_timeout:g}")
    remote = is_served(args.index)
    if args.upload and not remote:
        return _usage("--upload sends this machine's PDFs to an index that `agree serve` holds "
                      "(--index http://HOST:PORT); a folder index reads them where they are")
    options = {"device": args.device} if args.device else {}
    metadata = _pairs(args.meta, "--meta") if args.meta else None
    with PageIndex.open(args.index, args.encoder, wait=args.wait, encoder_options=options,
                        dpi=args.dpi, **_storage_settings(args)) as index:
        if args.upload:
            report = index.upload(args.paths, metadata=metadata, progress=not args.quiet)
        elif remote:
            report = _add_on_server(index, args, metadata)
        else:
            report = index.add(args.paths, metadata=metadata, batch_size=args.batch_size,
                               progress=not args.quiet, page_timeout=args.page_timeout)
    for e in report.skipped:
        sys.stderr.write(f"skipped: {e.path}: {e.reason} [{e.code}]\n")
    for e in report.failed_pages:
        sys.stderr.write(f"failed: {e.path} page {e.page}: {e.reason} [{e.code}]\n")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            for e in report.problems():
                f.write(json.dumps(e.to_json()) + "\n")
    log.info("indexed %d pages from %d files; %d files unchanged; %d files skipped; %d pages "
             "failed (retried by the next run)%s", report.pages, len(report.added),
             len(report.unchanged), len(report.skipped), len(report.failed_pages),
             f"; report in {args.report}" if args.report else "")
    return EXIT_OK if report.ok else EXIT_SKIPPED


def _add_on_server(index, args: argparse.Namespace, metadata: dict[str, Any] | None):  # noqa: ANN001, ANN202 - a RemoteIndex and its report
    from agree_core.serve.client import RemoteIndexError

    try:
        return index.add(args.paths, metadata=metadata, batch_size=args.batch_size, progress=not args.quiet)
    except RemoteIndexError as e:
        here = [p for p in args.paths if Path(p).exists()]
        if e.status != 403 or not here:
            raise
        raise RemoteIndexError(f"{e}; {here[0]} is on this machine: add --upload to send it", e.status) from None


def cmd_search(args: argparse.Namespace) -> int:
    from agree_core.index import PageIndex

    if (args.query is None) == (args.queries is None):
        return _usage("give either a QUERY or --queries FILE")
    if args.k < 1:
        return _usage(f"-k must be >= 1, got {args.k}")
    if args.rerank_top < 1:
        return _usage(f"--rerank-top must be >= 1, got {args.rerank_top}")
    queries = _read_queries(args.queries) if args.queries else [(1, args.query)]
    with PageIndex.open(args.index, create=False, wait=args.wait) as index:
        results = index.search_batch([q for _, q in queries], max(args.k, args.rerank_top) if args.rerank else args.k,
                                     _pairs(args.filter, "--filter"), args.candidates)
        if args.rerank:  # the second stage: the reranker reads each query with its pages
            from agree_core.rerankers import rerank_batch

            results = rerank_batch(args.rerank, [q for _, q in queries], results, args.k, args.rerank_top)
        if args.json:  # each hit with its evidence, read while the index is open
            from agree_core.search_json import search_lines

            for line in search_lines(index, queries, results):
                sys.stdout.write(json.dumps(line) + "\n")
            return EXIT_OK
    for (qid, query), hits in zip(queries, results):
        sys.stdout.write(f"{query}\n")
        for rank, h in enumerate(hits, start=1):
            sys.stdout.write(f"  {rank:2d}. {h.score:8.3f}  {h.source}  page {h.page}\n")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from PIL import Image

    from agree_core.evidence import evidence_by_id
    from agree_core.heatmaps import contact_sheet, draw_evidence, overlay_heatmap
    from agree_core.index import PageIndex
    from agree_core.index.storage import is_served

    remote = is_served(args.index)  # a RemoteIndex (httpx is imported for it only)
    with PageIndex.open(args.index, create=False, wait=args.wait) as index:
        hits = index.search(args.query, args.k)
        if not hits:
            log.error("the index holds no pages")
            return EXIT_ERROR
        if remote and args.mode == "maxsim":  # the server found the evidence
            images = [draw_evidence(Image.open(io.BytesIO(index.page_image(h.page_id))), h.evidence)
                      for h in hits]
        elif remote:  # the server draws them: its disk has the images
            images = [Image.open(io.BytesIO(index.heatmap(h.page_id, args.query, args.mode)))
                      for h in hits]
        elif args.mode == "maxsim":  # the evidence boxes, as agree search --json gives them
            found = evidence_by_id(index, args.query, [h.page_id for h in hits])
            images = [draw_evidence(Image.open(h.image), found.get(h.page_id, [])) for h in hits]
        else:
            maps = index.similarity_maps(args.query, hits, args.mode)
            images = [overlay_heatmap(Image.open(h.image), m) for h, m in zip(hits, maps)]
    panels = [(image, f"#{i} {Path(h.source).name} p.{h.page}\nscore {h.score:.2f}")
              for i, (h, image) in enumerate(zip(hits, images), start=1)]
    contact_sheet(panels).save(args.out)
    log.info("wrote %s", args.out)
    sys.stdout.write(str(Path(args.out).absolute()) + "\n")
    return EXIT_OK


def _storage_settings(args: argparse.Namespace) -> dict:
    """`agree index`'s storage flags given, as IndexConfig fields (an existing index keeps its own)."""
    given = {"pool_factor": args.pool_factor, "vector_datatype": args.vector_datatype}
    return {k: v for k, v in given.items() if v is not None}


def cmd_info(args: argparse.Namespace) -> int:
    from agree_core.index import PageIndex

    with PageIndex.open(args.index, create=False, wait=args.wait) as index:
        info = index.info()
    if args.json:
        sys.stdout.write(json.dumps(info) + "\n")
        return EXIT_OK
    sys.stdout.write(f"{info['location']}: {info['pages']} pages in {len(info['documents'])} "
                     f"documents, encoder {info['encoder']}\n")
    for d in info["documents"]:
        sys.stdout.write(f"  {d['pages']:6d}  {d['source']}\n")
    for d in info.get("failed_pages", []):
        sys.stdout.write(f"  {'(failed)':>12}  {d['source']} page {d['page']}: {d['message']} "
                         f"[{d['code']}] (retried by the next `agree index`)\n")
    for d in info["incomplete"]:
        sys.stdout.write(f"  {'(' + d['state'] + ')':>12}  {d['source']} (run `agree index` again "
                         "to finish it)\n")
    if info["records"]:
        sys.stdout.write(f"  and {info['records']} documents written by frameworks (not PDF files)\n")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    from agree_core.index import PageIndex

    missing = 0
    with PageIndex.open(args.index, create=False, wait=args.wait) as index:
        for source in args.sources:
            removed = index.delete(source)
            if removed:
                log.info("removed %s (%d pages)", source, removed)
            else:
                log.error("%s is not in the index", source)
                missing += 1
    return EXIT_ERROR if missing else EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from agree_core.evaluation import EvalInputError, evaluate_index, load_queries
    from agree_core.index import PageIndex

    try:
        queries = load_queries(args.queries, args.qrels)
        with PageIndex.open(args.index, create=False, wait=args.wait) as index:
            report = evaluate_index(index, queries, candidates=args.candidates)
    except EvalInputError as e:
        return _usage(str(e))
    sys.stdout.write((json.dumps(report.to_json()) if args.json else report.table()) + "\n")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agree_core.demo import run_demo

    questions = list(args.question)
    if args.questions:
        questions += [q for _, q in _read_queries(args.questions)]
    return run_demo(args.pdfs, Path(args.out), questions, quiet=args.quiet)


def cmd_teacher(args: argparse.Namespace) -> int:
    from agree_core.teacher.build import build_command
    from agree_core.teacher.qwen import layer_list

    report = build_command(args.data, args.out, teacher=args.teacher, device=args.device,
                           dpi=args.dpi, progress=not args.quiet, variant=args.variant,
                           layers=layer_list(args.layers), max_image_tokens=args.max_image_tokens,
                           dtype=args.dtype)
    log.info("teacher maps: %d computed, %d already cached, %d skipped (of %d)", report.computed,
             report.cached, len(report.skipped), report.total)
    for line, reason in report.skipped:
        sys.stderr.write(f"skipped: line {line}: {reason}\n")
    return EXIT_OK if report.ok else EXIT_SKIPPED


def cmd_dataset(args: argparse.Namespace) -> int:
    from agree_core.training.data import DataError

    try:
        if args.dataset_command == "convert":
            return _dataset_convert(args)
        if args.dataset_command == "from-parquet":
            return _dataset_from_parquet(args)
        return _dataset_synthesize(args)
    except DataError as e:
        log.error("%s", e)
        return EXIT_USAGE


def _dataset_convert(args: argparse.Namespace) -> int:
    from agree_core.training.convert import convert

    if args.hard_negatives < 0:
        return _usage(f"--hard-negatives must be >= 0, got {args.hard_negatives}")
    report = convert(args.index, args.queries, args.out, hard_negatives=args.hard_negatives,
                     wait=args.wait)
    log.info("wrote %d examples for %d queries to %s", report.examples, report.queries, args.out)
    if args.hard_negatives:
        log.info("%d hard negatives%s", report.negatives,
                 f" ({report.short} examples got fewer than {args.hard_negatives}: the index is "
                 "small)" if report.short else "")
    return EXIT_OK


def _dataset_from_parquet(args: argparse.Namespace) -> int:
    from agree_core.training.parquet import from_parquet

    if args.limit is not None and args.limit < 1:
        return _usage(f"--limit must be >= 1, got {args.limit}")
    if not args.split or "/" in args.split or args.split.startswith("."):
        return _usage(f"--split must be a plain name such as train or test, got {args.split!r}")
    report = from_parquet(args.paths, args.out, query_column=args.query_column,
                          image_column=args.image_column, split_name=args.split, limit=args.limit,
                          progress=not args.quiet)
    log.info("wrote %d examples to %s (%d images written, %d reused; %d of %d rows skipped)",
             report.examples, Path(args.out) / f"{args.split}.jsonl", report.images_written,
             report.images_reused, len(report.skipped), report.rows)
    for file, row, reason in report.skipped:
        sys.stderr.write(f"skipped: {file} row {row}: {reason}\n")
    return EXIT_OK if report.ok else EXIT_SKIPPED


def _dataset_synthesize(args: argparse.Namespace) -> int:
    from agree_core.teacher.qwen import DEFAULT_TEACHER
    from agree_core.training.synthesize import QuestionWriter, synthesize

    if args.pages < 1 or args.per_page < 1:
        return _usage(f"--pages and --per-page must be >= 1, got {args.pages} and {args.per_page}")
    writer = QuestionWriter(args.model or DEFAULT_TEACHER, device=args.device, dtype=args.dtype,
                            max_image_tokens=args.max_image_tokens,
                            max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    report = synthesize(args.paths, args.out, writer, pages=args.pages, per_page=args.per_page,
                        seed=args.seed, dpi=args.dpi, progress=not args.quiet)
    log.info("wrote %d questions for %d pages to %s (%d pages already there, %d skipped)",
             report.written, report.new_pages, args.out,
             report.done, len(report.skipped))
    for reason in report.skipped:
        sys.stderr.write(f"skipped: {reason}\n")
    return EXIT_OK if not report.skipped else EXIT_SKIPPED


def _cmd_migrate(args: argparse.Namespace) -> int:
    from agree_core.cli_migrate import cmd_migrate

    return cmd_migrate(args)


def _cmd_first_stage(args: argparse.Namespace) -> int:
    from agree_core.cli_first_stage import cmd_first_stage

    return cmd_first_stage(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from agree_core.serve.command import cmd_serve

    return cmd_serve(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 must not crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="agree: %(message)s", stream=sys.stderr)
    if not args.verbose:
        for noisy in ("httpx", "transformers", "RapidOCR"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from agree_core.generation.ask import cmd_ask
    from agree_core.index import IndexBusyError, IndexConfigError

    commands = {"index": cmd_index, "search": cmd_search, "show": cmd_show, "info": cmd_info,
                "delete": cmd_delete, "eval": cmd_eval, "demo": cmd_demo, "teacher": cmd_teacher,
                "dataset": cmd_dataset, "ask": cmd_ask, "migrate": _cmd_migrate,
                "encoders": cli_encoders.cmd_encoders, "serve": _cmd_serve,
                "first-stage": _cmd_first_stage}
    try:
        return commands[args.command](args)
    except IndexBusyError as e:
        from agree_core.index.lock import WAIT_HINT

        log.error("%s", str(e).replace(WAIT_HINT, "retry with --wait SECONDS"))
        return EXIT_BUSY
    except IndexConfigError as e:
        log.error("%s", e)
        return EXIT_CONFIG
    except (ValueError, RuntimeError, ImportError, OSError) as e:
        log.error("%s", e)
        log.debug("details", exc_info=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        log.error("interrupted; what was written is kept and a rerun resumes")
        return 130


if __name__ == "__main__":
    sys.exit(main())
