"""Answering with the pages in Haystack: examples/haystack/query.yaml hands the top pages to the
chat generator as image parts, in rank order, each with its citation (file, page, evidence),
and the answer comes back with them. A recording generator stands in for the model."""

from __future__ import annotations

import base64
import io
import os

from conftest import copy_index
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

pytest.importorskip("haystack", reason="the haystack extra is not installed: pip install -e '.[haystack]'")
try:
    import haystack_integrations.components.generators.agree  # noqa: F401
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integrations" / "haystack"))

from haystack import Document, Pipeline, component  # noqa: E402
from haystack.dataclasses import ByteStream, ChatMessage  # noqa: E402
from PIL import Image  # noqa: E402

from agree_core.generation import fit_image  # noqa: E402
from haystack_integrations.components.converters.agree import AgreeDocumentToImageContent  # noqa: E402
from haystack_integrations.components.generators.agree import AgreeQwenVLChatGenerator  # noqa: E402
from haystack_integrations.document_stores.agree import AgreeDocumentStore  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "haystack"
QUESTION = "Which solar site produced the most electricity?"


@component
class RecordingChatGenerator:
    """Keeps the messages it is given and answers citing page [1]."""

    def __init__(self):
        self.calls: list[list[ChatMessage]] = []

    @component.output_types(replies=list[ChatMessage])
    def run(self, messages: list[ChatMessage]) -> dict:
        self.calls.append(messages)
        return {"replies": [ChatMessage.from_assistant("Hollow Creek [1].")]}


def with_generator(pipeline: Pipeline, generator) -> Pipeline:  # noqa: ANN001
    """The pipeline with ``generator`` in place of its MockChatGenerator."""
    pipeline.remove_component("generator")
    pipeline.add_component("generator", generator)
    pipeline.connect("prompt_builder.prompt", "generator.messages")
    pipeline.connect("generator.replies", "answer_builder.replies")
    return pipeline


@pytest.fixture
def in_index_dir(tmp_path, sample_index, monkeypatch):
    """The sample index at ./agree-index, where query.yaml looks for it."""
    copy_index(sample_index, tmp_path / "agree-index")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "agree-index"


def test_query_yaml_sends_exactly_the_top_pages_as_images_in_order_with_citations(in_index_dir):
    recorder = RecordingChatGenerator()
    pipeline = with_generator(Pipeline.loads((EXAMPLES / "query.yaml").read_text()), recorder)
    result = pipeline.run({"query": QUESTION}, include_outputs_from={"ranker"})
    top = result["ranker"]["documents"]
    assert len(top) == 3 and len(recorder.calls) == 1
    system, user = recorder.calls[0]
    assert system.role.value == "system" and "Cite each page" in system.text
    images = user.images
    assert [(i.meta["source"], i.meta["page"]) for i in images] == [(d.meta["source"], d.meta["page"]) for d in top]
    assert (Path(images[0].meta["source"]).name, images[0].meta["page"]) == ("report.pdf", 3)
    for n, (img, doc) in enumerate(zip(images, top), start=1):
        # the image the index stored (no re-rendering), scaled to max_pixels
        stored = Image.open(io.BytesIO(doc.blob.data)).convert("RGB")
        sent = Image.open(io.BytesIO(base64.b64decode(img.base64_image)))
        assert img.mime_type == "image/jpeg" and sent.size == fit_image(stored, 602112).size
        assert f"[{n}] {Path(doc.meta['source']).name}, page {doc.meta['page']}" in "\n".join(user.texts)
        assert img.meta["document_id"] == doc.id and img.meta["score"] == pytest.approx(doc.score)
        for e in img.meta["evidence"]:
            assert all(0.0 <= v <= 1.0 for v in e["box"]) and e["box"][0] < e["box"][2] and e["score"] > 0
    best = images[0].meta["evidence"]
    assert best and "electricity" in [e["text"].lower().strip(".,") for e in best]  # the words that matched
    # the order of the parts: question, then header, image, text for each page
    kinds = [type(p).__name__ for p in user._content]
    assert kinds == ["TextContent"] + ["ImageContent", "TextContent"] * 3

    answer = result["answer_builder"]["answers"][0]
    assert answer.data == "Hollow Creek [1]." and answer.query == QUESTION
    assert [(d.meta["source"], d.meta["page"]) for d in answer.documents] == [
        (d.meta["source"], d.meta["page"]) for d in top]
    assert [d.meta["referenced"] for d in answer.documents] == [True, False, False]
    assert answer.documents[0].meta["evidence"] == best


def test_the_converter_needs_page_images_and_checks_its_settings(tmp_path):
    with pytest.raises(ValueError, match="max_pixels must be an integer >= 784 or None, got 10"):
        AgreeDocumentToImageContent(max_pixels=10)
    with pytest.raises(ValueError, match="detail must be 'auto', 'high', 'low' or None"):
        AgreeDocumentToImageContent(detail="max")
    with pytest.raises(ValueError, match="document_store must be an AgreeDocumentStore"):
        AgreeDocumentToImageContent(document_store="agree-index")
    with pytest.raises(ValueError, match="has no page image: retrieve pages from an AgreeDocumentStore"):
        AgreeDocumentToImageContent().run([Document(content="text only", meta={"source": "a.pdf", "page": 2})])
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1000), "white").save(buf, format="PNG")
    doc = Document(content="p", blob=ByteStream(buf.getvalue(), mime_type="image/png"), meta={"source": "/x/a.pdf", "page": 2})
    out = AgreeDocumentToImageContent(max_pixels=20_000).run([doc])
    sent = Image.open(io.BytesIO(base64.b64decode(out["image_contents"][0].base64_image)))
    assert sent.size == (200, 100) and out["image_contents"][0].meta["file_name"] == "a.pdf"
    assert out["documents"][0].id == doc.id and out["documents"][0].meta["evidence"] == []


def test_the_new_components_serialise_and_load_from_yaml_under_the_default_allowlist(tmp_path):
    store = AgreeDocumentStore(index_dir=tmp_path / "never-opened")
    for c in (AgreeDocumentToImageContent(document_store=store, max_pixels=100_000, detail="low"),
              AgreeQwenVLChatGenerator(model="some/qwen-vl", device="cpu", dtype="float32", max_pixels=50_000,
                                       generation_kwargs={"max_new_tokens": 7})):
        data = c.to_dict()
        assert type(c).from_dict(data).to_dict() == data
        assert data["type"].startswith("haystack_integrations.components.")
    text = (EXAMPLES / "query.yaml").read_text().replace(
        "type: haystack.components.generators.chat.mock.MockChatGenerator\n    init_parameters: {}",
        "type: haystack_integrations.components.generators.agree.chat_generator.AgreeQwenVLChatGenerator\n"
        "    init_parameters: {model: Qwen/Qwen2.5-VL-3B-Instruct, max_pixels: 200000}")
    pipeline = Pipeline.loads(text)  # nothing loads yet: weights load in warm_up
    gen = pipeline.get_component("generator")
    assert isinstance(gen, AgreeQwenVLChatGenerator) and gen.max_pixels == 200000
    assert not (tmp_path / "never-opened").exists()


def test_the_local_generator_checks_its_settings():
    with pytest.raises(ValueError, match=r"dtype must be 'auto', 'float32' or 'bfloat16' \(never float16\)"):
        AgreeQwenVLChatGenerator(dtype="float16")
    with pytest.raises(ValueError, match="unknown generation_kwargs"):
        AgreeQwenVLChatGenerator(generation_kwargs={"top_q": 1})
    with pytest.raises(ValueError, match="max_pixels must be an integer >= 3136"):
        AgreeQwenVLChatGenerator(max_pixels=100)
