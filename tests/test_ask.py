"""`agree ask` and the generators behind it: with no model it prints the pages and the exact
prompt; an OpenAI-compatible server (here a local stand-in speaking the API) gets the page
images; bad settings fail with a clear message."""

from __future__ import annotations

import base64
import io
import json
import os
import re

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from agree_core.cli import main
from agree_core.generation import build_messages, load_generator, page_contexts, render_prompt
from agree_core.generation.ask import ask
from agree_core.generation.openai_compat import OpenAICompatibleGenerator
from agree_core.index import PageIndex
from conftest import copy_index, run_cli

QUESTION = "Which solar site produced the most electricity?"


@pytest.fixture
def index_dir(tmp_path, sample_index):
    copy_index(sample_index, tmp_path / "index")
    return tmp_path / "index"


def no_llm_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGREE_LLM")}


def test_ask_without_a_model_prints_the_pages_and_the_exact_prompt(index_dir, samples):
    out = run_cli("ask", "--index", str(index_dir), QUESTION, "-k", "2", env=no_llm_env())
    assert out.returncode == 0, out.stderr
    pages, prompt = out.stdout.split("\nPrompt:\n")
    assert pages.splitlines()[1].startswith(f"  [1] {samples[0]}  page 3  score ")
    first = pages.split("\n  [2]")[0]  # the top page's evidence lines name the words that matched
    assert "evidence [" in first and '"electricity' in first.lower() and '"site"' in first
    assert "no model is configured" in out.stderr and "--llm openai:MODEL" in out.stderr
    assert "OPENAI_API_KEY" in out.stderr and "--llm local:ID_OR_PATH" in out.stderr

    class Recorder:  # what a generator is given, for the same question and index
        def generate(self, messages):  # noqa: ANN001, ANN202
            self.messages = messages
            from agree_core.generation.qwen import Generation
            return Generation("ok [1]", "recorder")

    recorder = Recorder()
    with PageIndex.open(index_dir, create=False) as index:
        answer = ask(index, QUESTION, recorder, k=2)
    assert prompt.rstrip("\n") == render_prompt(recorder.messages)  # exactly what a model gets
    assert f"Question: {QUESTION}" in prompt and "[1] report.pdf, page 3" in prompt
    image_line = next(line for line in prompt.splitlines() if line.startswith("<image: "))
    assert image_line.startswith(f"<image: {answer.pages[0].image_path}, ") and image_line.endswith(" px>")
    assert answer.text == "ok [1]" and [p.page for p in answer.pages] == [3, answer.pages[1].page]


def test_ask_json_without_a_model(index_dir, samples, monkeypatch, capsys):
    monkeypatch.delenv("AGREE_LLM", raising=False)
    assert main(["ask", "--index", str(index_dir), QUESTION, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] is None and result["query"] == QUESTION
    top = result["citations"][0]
    assert (top["source"], top["page"]) == (str(samples[0]), 3) and len(result["citations"]) == 3
    assert {"box", "text", "score"} == set(top["evidence"][0]) and Image.open(top["image"]).size[0] > 0


@pytest.mark.parametrize("llm, message", [
    ("claude:opus", "--llm must be openai:MODEL or local:ID_OR_PATH .* got 'claude:opus'"),
    ("gpt-4o", "--llm must be openai:MODEL or local:ID_OR_PATH"),
    ("openai:", "--llm must be openai:MODEL or local:ID_OR_PATH"),
    ("openai:gpt-4o-mini", "OPENAI_API_KEY is not set: export OPENAI_API_KEY=sk-... for OpenAI, or "
                           "export OPENAI_BASE_URL"),
    ("local:/no/such/model", "answer model checkpoint /no/such/model does not exist"),
])
def test_bad_model_settings_fail_clearly_before_the_index_is_read(tmp_path, llm, message, monkeypatch, caplog):
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGREE_LLM"):
        monkeypatch.delenv(key, raising=False)
    # the index is not even there: the model settings are checked first
    assert main(["ask", "--index", str(tmp_path / "no-index"), QUESTION, "--llm", llm]) == 1
    assert re.search(message, caplog.text), caplog.text


class ChatServer(BaseHTTPRequestHandler):
    """A stand-in OpenAI-compatible server (as vLLM serves one): records the bodies, answers."""

    bodies: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ChatServer.bodies.append((self.path, self.headers.get("Authorization"), body))
        if body.get("stream"):  # server-sent events, one chunk per word
            events = [{"choices": [{"delta": {"content": t}}]} for t in ("Hollow ", "Creek ", "[1].")]
            data = ("".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n").encode()
            kind = "text/event-stream"
        else:
            data = json.dumps({"model": body["model"], "usage": {"prompt_tokens": 900, "completion_tokens": 4},
                               "choices": [{"message": {"role": "assistant", "content": "Hollow Creek [1]."},
                                            "finish_reason": "stop"}]}).encode()
            kind = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # noqa: ANN002
        pass


@pytest.fixture
def chat_server():
    ChatServer.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


def test_ask_with_an_openai_compatible_server_sends_the_page_images(index_dir, samples, chat_server):
    env = {**no_llm_env(), "OPENAI_BASE_URL": chat_server}  # a local server needs no key
    out = run_cli("ask", "--index", str(index_dir), QUESTION, "--llm", "openai:Qwen/Qwen2.5-VL-7B-Instruct",
                  "--max-pixels", "100000", "--json", env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["answer"] == "Hollow Creek [1]." and result["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    (path, auth, body), = ChatServer.bodies
    assert "stream" not in body
    assert path == "/v1/chat/completions" and auth is None
    system, user = body["messages"]
    assert system["role"] == "system" and "Cite each page" in system["content"]
    images = [p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url"]
    headers = [p["text"] for p in user["content"] if p["type"] == "text" and p["text"].startswith("[")]
    assert len(images) == 3 and headers[0] == "[1] report.pdf, page 3"
    assert [h.split(", page ")[1] for h in headers] == [str(c["page"]) for c in result["citations"]]
    for url in images:
        assert url.startswith("data:image/jpeg;base64,")
        w, h = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size
        assert w * h <= 100_000
    assert user["content"][0] == {"type": "text", "text": f"Question: {QUESTION}"}

    out = run_cli("ask", "--index", str(index_dir), QUESTION, "--llm", "openai:gpt-x", env=env)
    assert out.returncode == 0, out.stderr
    answer, sources = out.stdout.split("\n\nSources:\n")
    assert answer == "Hollow Creek [1]." and sources.startswith(f"  [1] {samples[0]}  page 3")
    assert ChatServer.bodies[1][2]["stream"] is True  # the terminal shows the answer as it comes


def test_the_openai_compatible_client_streams_and_reports_http_errors(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        if body["model"] == "denied":
            return httpx.Response(401, json={"error": {"message": "Incorrect API key provided"}})
        events = [{"choices": [{"delta": {"content": t}}]} for t in ("Hollow ", "Creek")]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"Content-Type": "text/event-stream"})

    gen = OpenAICompatibleGenerator("gpt-x", api_key="sk-test", transport=httpx.MockTransport(handler), max_pixels=5000)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (400, 300))},
                                             {"type": "text", "text": "What?"}]}]
    assert "".join(gen.stream(messages)) == "Hollow Creek"
    request = seen[0]
    assert str(request.url) == "https://api.openai.com/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    assert body["stream"] is True and body["messages"][0]["content"][1] == {"type": "text", "text": "What?"}
    sent = Image.open(io.BytesIO(base64.b64decode(body["messages"][0]["content"][0]["image_url"]["url"].split(",")[1])))
    assert sent.size == (81, 61)  # scaled to at most max_pixels, aspect kept
    denied = OpenAICompatibleGenerator("denied", api_key="sk-bad", transport=httpx.MockTransport(handler))
    with pytest.raises(RuntimeError, match=r"answered HTTP 401 \(check OPENAI_API_KEY\): Incorrect API key"):
        denied.generate(messages)
    with pytest.raises(ValueError, match="unknown generation settings"):
        gen.payload(messages, top_k=3)


def test_load_generator_and_the_prompt_builder_check_their_input(index_dir):
    with pytest.raises(ValueError, match="detail must be 'auto', 'low' or 'high'"):
        load_generator("openai:gpt-x", api_key="k", detail="ultra")
    with pytest.raises(ValueError, match=r"dtype must be .* \(never float16\)"):
        load_generator("local:/models/qwen", dtype="float16")
    with PageIndex.open(index_dir, create=False) as index:
        pages = page_contexts(index, QUESTION, index.search(QUESTION, 1))
        with pytest.raises(ValueError, match="the question must be a non-empty string"):
            build_messages(" ", pages)
        with pytest.raises(ValueError, match="max_pixels must be >= 784"):
            build_messages(QUESTION, pages, max_pixels=100)
        with pytest.raises(ValueError, match="k must be >= 1, got 0"):
            ask(index, QUESTION, k=0)
