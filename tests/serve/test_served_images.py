"""Page images of a served index in the frameworks' own terms: LlamaIndex ImageNodes carry
the server's ``image_url`` (signed, so that LlamaIndex's ``resolve_image``, a plain GET with
no headers, opens it on a server that needs a token), Haystack Documents carry the image
bytes with the URL in the blob's meta. Never a path on the server's disk."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import httpx

from serve.frameworks import need_frameworks  # before the framework imports below

need_frameworks()

from llama_index.core.schema import ImageNode  # noqa: E402
from llama_index.retrievers.agree import AgreeVisualRetriever  # noqa: E402
from PIL import Image  # noqa: E402

from agree_core.serve.tokens import sign_path  # noqa: E402
from serve.servers import serve_in_thread  # noqa: E402

QUESTION = "revenue in the third quarter"
TOKEN = "s3cret"


def test_served_image_nodes_carry_a_signed_image_url_that_resolve_image_opens(
        sample_index, index_copy, monkeypatch):
    with AgreeVisualRetriever(sample_index, top_k=3) as local:
        expected = {n.node.node_id: Path(n.node.image_path).read_bytes() for n in local.retrieve(QUESTION)}
    monkeypatch.setenv("AGREE_TOKEN", TOKEN)
    with serve_in_thread(index_copy, token=TOKEN) as url:
        with AgreeVisualRetriever(url, top_k=3) as remote:
            got = remote.retrieve(QUESTION)
            pages = remote.page_nodes()
        assert [n.node.node_id for n in got] == list(expected)
        for n in got:
            node = n.node
            assert isinstance(node, ImageNode) and node.image_path is None and node.image is None
            path = f"/pages/{node.node_id}/image"
            assert node.image_url == f"{url}{path}?sig={sign_path(TOKEN, path)}"
            assert node.image_mimetype == "image/jpeg"
            # LlamaIndex's own resolution: requests.get(image_url), no token header
            assert node.resolve_image().read() == expected[node.node_id]
            with Image.open(node.resolve_image()) as image:
                assert image.width > 0
        # the same node (hash) whether retrieved or listed: QueryFusionRetriever merges them
        by_id = {p.node_id: p for p in pages}
        assert all(by_id[n.node.node_id].hash == n.node.hash for n in got)
        # the signature opens that image, nothing else
        some = got[0].node.node_id
        other = got[1].node.node_id
        assert httpx.get(f"{url}/pages/{some}/image").status_code == 401
        assert httpx.get(f"{url}/pages/{other}/image?sig={sign_path(TOKEN, f'/pages/{some}/image')}").status_code == 401
        assert httpx.get(f"{url}/pages/{some}?sig={sign_path(TOKEN, f'/pages/{some}')}").status_code == 401
        assert httpx.get(f"{url}/pages/{some}/image?sig={sign_path('wrong', f'/pages/{some}/image')}").status_code == 401
        assert httpx.post(f"{url}/pages/{some}/image?sig={sign_path(TOKEN, f'/pages/{some}/image')}").status_code in (401, 405)


def test_served_image_nodes_without_a_token_are_plain_urls(index_copy, monkeypatch):
    monkeypatch.delenv("AGREE_TOKEN", raising=False)
    with serve_in_thread(index_copy) as url:
        with AgreeVisualRetriever(url, top_k=1) as remote:
            (hit,) = remote.retrieve(QUESTION)
    assert hit.node.image_url == f"{url}/pages/{hit.node.node_id}/image" and hit.node.image_path is None


def test_a_records_image_is_served_by_its_url_and_a_non_image_file_is_not(tmp_path, monkeypatch):
    from agree_core.index.records import Record
    from agree_core.serve.client import RemoteIndex

    buf = BytesIO()
    Image.new("RGB", (40, 30), "navy").save(buf, format="PNG")
    monkeypatch.setenv("AGREE_TOKEN", TOKEN)
    with serve_in_thread(tmp_path / "served", token=TOKEN) as url, RemoteIndex(url) as client:
        client.records.write([Record("chart", "a navy chart of quarterly revenue", buf.getvalue(), "image/png"),
                              Record("notes", "quarterly revenue notes", b"%not an image", "application/octet-stream")])
        with AgreeVisualRetriever(url, top_k=2) as remote:
            got = {n.node.node_id: n.node for n in remote.retrieve("quarterly revenue chart")}
        assert isinstance(got["chart"], ImageNode) and got["chart"].image_path is None
        assert got["chart"].resolve_image().read() == buf.getvalue()
        assert not isinstance(got["notes"], ImageNode)
        (notes,) = client.records.get(["notes"], with_blobs=False)
        assert notes.image_url is None and notes.image_path is None
        from agree_core.index.records import record_point_id

        path = f"/pages/{record_point_id('notes')}/image"
        assert httpx.get(f"{url}{path}?sig={sign_path(TOKEN, path)}").status_code == 404


def test_served_haystack_documents_carry_the_image_bytes_and_its_url(sample_index, index_copy, monkeypatch):
    from haystack import Document
    from haystack.dataclasses import ByteStream

    from haystack_integrations.components.converters.agree import AgreeDocumentToImageContent
    from haystack_integrations.components.retrievers.agree import AgreeRetriever
    from haystack_integrations.document_stores.agree import AgreeDocumentStore

    local_store = AgreeDocumentStore(index_dir=str(sample_index))
    expected = AgreeRetriever(document_store=local_store, top_k=3).run(query=QUESTION)["documents"]
    local_store.close()
    for d in expected:  # what the local path carries: the bytes, and the file they came from
        assert d.blob.meta == {"file_path": d.blob.meta["file_path"]}
        assert Path(d.blob.meta["file_path"]).read_bytes() == d.blob.data
    monkeypatch.setenv("AGREE_TOKEN", TOKEN)
    with serve_in_thread(index_copy, token=TOKEN) as url:
        store = AgreeDocumentStore(index_dir=url)
        got = AgreeRetriever(document_store=store, top_k=3).run(query=QUESTION)["documents"]
        assert [(d.id, d.blob.data, d.blob.mime_type) for d in got] == [
            (d.id, d.blob.data, d.blob.mime_type) for d in expected]
        for d in got:
            path = f"/pages/{d.id}/image"
            assert d.blob.meta == {"url": f"{url}{path}?sig={sign_path(TOKEN, path)}"}
            assert httpx.get(d.blob.meta["url"]).content == d.blob.data  # no token header
        images = AgreeDocumentToImageContent().run(documents=got)["image_contents"]
        assert len(images) == 3
        # a Document written with its own blob keeps the blob's own meta
        chart = BytesIO()
        Image.new("RGB", (20, 20), "red").save(chart, format="PNG")
        store.write_documents([Document(id="chart", content="a red chart", blob=ByteStream(
            chart.getvalue(), mime_type="image/png", meta={"file_path": "/on/the/writer/chart.png"}))])
        (back,) = store.filter_documents({"field": "id", "operator": "==", "value": "chart"})
        assert back.blob.data == chart.getvalue() and back.blob.meta == {"file_path": "/on/the/writer/chart.png"}
        no_images = AgreeDocumentStore(index_dir=url, include_images=False)
        assert all(d.blob is None for d in AgreeRetriever(document_store=no_images, top_k=2).run(query=QUESTION)["documents"])
        no_images.close()
        store.close()
