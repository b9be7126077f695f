"""The local answer model end to end, on a tiny random Qwen2.5-VL / Qwen2-VL (plumbing, not
answer quality): in Haystack (query.yaml with AgreeQwenVLChatGenerator) and in LlamaIndex
(AgreeVisualQueryEngine with AgreeQwenVL), the retrieved page images reach the model's vision
tower, one image per page in rank order, and its input holds one image token per merged patch."""

from __future__ import annotations

import asyncio
import os

from conftest import copy_index
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from agree_core.generation.pages import fit_image
from agree_core.generation.qwen import QwenVLGenerator

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "haystack"
QUESTION = "Which solar site produced the most electricity?"
MAX_PIXELS = 48 * 28 * 28  # small pages: a fast test


@contextmanager
def watching(generator: QwenVLGenerator):
    """Records what the model receives: the ``grid_thw`` of every vision-tower call and the
    prompt's ``input_ids`` (the first forward of each generation)."""
    seen: dict[str, list] = {"grids": [], "prompts": []}
    model = generator.model

    def on_vision(module, args, kwargs):  # noqa: ANN001, ANN202
        seen["grids"].append(kwargs["grid_thw"].tolist())

    def on_forward(module, args, kwargs):  # noqa: ANN001, ANN202
        if kwargs["input_ids"].shape[1] > 1:  # the prompt (then one new token per forward)
            seen["prompts"].append(kwargs["input_ids"][0].tolist())

    hooks = [model.model.visual.register_forward_pre_hook(on_vision, with_kwargs=True),
             model.register_forward_pre_hook(on_forward, with_kwargs=True)]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def expected_grids(image_paths: list[str], sent_pixels: int) -> list[list[int]]:
    """The (t, h, w) patch grid of each stored page image: scaled to ``sent_pixels`` by the
    component that sends it, resized by Qwen's rule (multiples of 28, at most MAX_PIXELS, the
    tiny checkpoint's min_pixels 3136), 14-pixel patches."""
    grids = []
    for p in image_paths:
        image = fit_image(Image.open(p).convert("RGB"), sent_pixels)
        h, w = smart_resize(image.height, image.width, 28, 3136, MAX_PIXELS)
        grids.append([1, h // 14, w // 14])
    return grids


def check_model_saw(seen: dict, generator: QwenVLGenerator, image_paths: list[str], sent_pixels: int) -> None:
    grids = expected_grids(image_paths, sent_pixels)
    assert seen["grids"] == [grids], "one vision-tower call with every page, in rank order"
    image_id = generator.model.config.image_token_id
    n_tokens = sum(t * h * w // 4 for t, h, w in grids)
    assert seen["prompts"][0].count(image_id) == n_tokens > 0


@pytest.mark.parametrize("family", ["colqwen2.5", "colqwen2"])
def test_the_local_generator_reads_each_image_as_image_tokens(teachers, family):
    gen = QwenVLGenerator(str(teachers[family]), device="cpu", max_pixels=MAX_PIXELS, max_new_tokens=3)
    pages = [Image.new("RGB", (612, 792), "white"), Image.new("RGB", (792, 612), "gray")]
    messages = [{"role": "system", "content": "Answer."},
                {"role": "user", "content": [{"type": "text", "text": "[1] a.pdf, page 1"},
                                             {"type": "image", "image": pages[0]},
                                             {"type": "text", "text": "[2] b.pdf, page 4"},
                                             {"type": "image", "image": pages[1]},
                                             {"type": "text", "text": "Question: what?"}]}]
    with watching(gen) as seen:
        result = gen.generate(messages)
    tall, wide = seen["grids"][0]
    assert tall[1] > tall[2] and wide[1] < wide[2]  # each page keeps its orientation
    assert result.usage["image_tokens"] == [t * h * w // 4 for t, h, w in (tall, wide)]
    assert seen["prompts"][0].count(gen.model.config.image_token_id) == sum(result.usage["image_tokens"])
    assert result.usage["completion_tokens"] <= 3 and result.finish_reason in ("stop", "length")
    assert "".join(gen.stream(messages)) == result.text  # greedy: the same answer, streamed


def test_haystack_query_yaml_with_the_local_generator(teachers, sample_index, tmp_path, monkeypatch):
    from haystack import Pipeline

    copy_index(sample_index, tmp_path / "agree-index")
    monkeypatch.chdir(tmp_path)
    text = (EXAMPLES / "query.yaml").read_text().replace(
        "type: haystack.components.generators.chat.mock.MockChatGenerator\n    init_parameters: {}",
        "type: haystack_integrations.components.generators.agree.chat_generator.AgreeQwenVLChatGenerator\n"
        f"    init_parameters: {{model: '{teachers['colqwen2.5']}', device: cpu, max_pixels: {MAX_PIXELS},"
        " generation_kwargs: {max_new_tokens: 3}}")
    pipeline = Pipeline.loads(text)  # the default allowlist: haystack_integrations.*
    generator = pipeline.get_component("generator")
    with watching(generator.generator) as seen:
        result = pipeline.run({"query": QUESTION}, include_outputs_from={"ranker", "generator"})
    top = result["ranker"]["documents"]
    check_model_saw(seen, generator.generator, [d.blob.meta["file_path"] for d in top], 602112)
    reply = result["generator"]["replies"][0]
    assert [(c["source"], c["page"]) for c in reply.meta["citations"]] == [(d.meta["source"], d.meta["page"]) for d in top]
    assert reply.meta["citations"][0]["evidence"] and len(reply.meta["usage"]["image_tokens"]) == 3
    answer = result["answer_builder"]["answers"][0]
    assert answer.data == reply.text and [d.id for d in answer.documents] == [d.id for d in top]

    chunks = []
    streamed = generator.run(messages=_prompt(pipeline, top), streaming_callback=chunks.append)
    assert "".join(c.content for c in chunks) == streamed["replies"][0].text == reply.text
    again = asyncio.run(generator.run_async(messages=_prompt(pipeline, top)))
    assert again["replies"][0].text == reply.text


def _prompt(pipeline, documents):  # noqa: ANN001, ANN202
    images = pipeline.get_component("page_images").run(documents=documents, query=QUESTION)
    return pipeline.get_component("prompt_builder").run(query=QUESTION, documents=images["documents"],
                                                        images=images["image_contents"])["prompt"]


def test_llamaindex_engine_with_the_local_llm(teachers, sample_index, tmp_path):
    from llama_index.llms.agree_qwen_vl import AgreeQwenVL
    from llama_index.query_engine.agree import AgreeVisualQueryEngine
    from llama_index.retrievers.agree import AgreeVisualRetriever

    copy_index(sample_index, tmp_path / "index")
    llm = AgreeQwenVL(model=str(teachers["colqwen2"]), device="cpu", max_pixels=MAX_PIXELS, max_new_tokens=3)
    with AgreeVisualRetriever(tmp_path / "index", top_k=3) as retriever:
        engine = AgreeVisualQueryEngine(retriever=retriever, llm=llm, max_pixels=MAX_PIXELS)
        with watching(llm.generator) as seen:
            response = engine.query(QUESTION)
        nodes = response.source_nodes
        check_model_saw(seen, llm.generator, [n.node.image_path for n in nodes], MAX_PIXELS)
        assert nodes[0].node.metadata["evidence"] and len(response.metadata["citations"]) == 3
        again = asyncio.run(engine.aquery(QUESTION))
        assert str(again) == str(response)
        streamed = AgreeVisualQueryEngine(retriever=retriever, llm=llm, max_pixels=MAX_PIXELS,
                                          streaming=True).query(QUESTION)
        assert "".join(streamed.response_gen) == str(response)

        async def astream() -> str:
            gen = await llm.astream_chat(engine.messages(QUESTION, nodes))
            return "".join([r.delta async for r in gen])

        assert asyncio.run(astream()) == str(response)
