"""What `agree serve` refuses: requests without the token, paths outside --allow-dir,
anything but index images through the page routes, oversize uploads."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from agree_core.serve.client import RemoteIndex, RemoteIndexError
from conftest import make_pdf, run_cli
from serve.servers import serve_in_thread
from serve.test_api import _wait


def test_token_required_when_set(index_copy, monkeypatch):
    with serve_in_thread(index_copy, token="s3cret-token") as url:
        assert httpx.get(url + "/health").status_code == 401
        r = httpx.post(url + "/search", json={"query": "solar"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "token" in r.json()["error"]
        wrong = httpx.get(url + "/info", headers={"Authorization": "Bearer s3cret-tokeN"})
        assert wrong.status_code == 401
        assert httpx.get(url + "/info", headers={"Authorization": "Basic s3cret-token"}).status_code == 401
        ok = httpx.get(url + "/info", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and ok.json()["pages"] == 9
        # the page itself holds no data: it loads, then asks for the token
        assert httpx.get(url + "/").status_code == 200
        with pytest.raises(RemoteIndexError, match="AGREE_TOKEN"):
            RemoteIndex(url).info()
        monkeypatch.setenv("AGREE_TOKEN", "s3cret-token")
        with RemoteIndex(url) as index:
            assert index.search("solar site", k=1)[0].source.endswith("report.pdf")


def test_no_token_needed_on_loopback(server):
    assert httpx.get(server + "/info").status_code == 200


def test_other_hosts_need_a_token(tmp_path, index_copy):
    out = run_cli("serve", "--index", str(index_copy), "--host", "0.0.0.0", "--port", "1",
                  env={k: v for k, v in os.environ.items() if k != "AGREE_TOKEN"})
    assert out.returncode == 1 and "token" in out.stderr
    empty = tmp_path / "token"
    empty.write_text("\n")
    out = run_cli("serve", "--index", str(index_copy), "--host", "0.0.0.0", "--token-file", str(empty))
    assert out.returncode == 1 and "empty" in out.stderr


def test_paths_outside_allow_dir_are_refused(http, tmp_path):
    inside = make_pdf(tmp_path / "ok.pdf", ["fine"])
    outside_dir = tmp_path.parent / f"outside-{uuid.uuid4().hex[:6]}"
    outside_dir.mkdir()
    outside = make_pdf(outside_dir / "secret.pdf", ["secret"])
    (tmp_path / "link").symlink_to(outside_dir)
    attempts = [
        "../" + outside_dir.name + "/secret.pdf",
        str(tmp_path / ".." / outside_dir.name / "secret.pdf"),
        str(outside),
        "/etc/passwd",
        str(tmp_path / "link" / "secret.pdf"),  # a symbolic link out of the root
        "link",
    ]
    for path in attempts:
        r = http.post("/documents", json={"paths": [path]})
        assert r.status_code == 403, (path, r.text)
        assert "outside" in r.json()["error"] or "'..'" in r.json()["error"]
    # relative paths are taken under the (first) allowed folder; URL-encoding is no escape
    relative = http.post("/documents", json={"paths": ["ok.pdf"]})
    assert _wait(http, relative.json()["job"])["added"] == [str(inside)]
    encoded = http.post("/documents", json={"paths": ["%2e%2e/" + outside_dir.name + "/secret.pdf"]})
    state = _wait(http, encoded.json()["job"])  # a literal folder named '%2e%2e' under the root...
    assert state["added"] == [] and state["skipped"][0]["path"].startswith(str(tmp_path))  # ...absent
    assert str(outside) not in {d["source"] for d in http.get("/info").json()["documents"]}


def test_no_paths_without_allow_dir(index_copy, tmp_path):
    pdf = make_pdf(tmp_path / "a.pdf", ["x"])
    with serve_in_thread(index_copy) as url:
        r = httpx.post(url + "/documents", json={"paths": [str(pdf)]})
        assert r.status_code == 403 and "--allow-dir" in r.json()["error"]
        r = httpx.request("DELETE", url + "/documents", json={"source": "a.pdf"})
        assert r.status_code == 400 and "relative path" in r.json()["error"] and "GET /info" in r.json()["error"]


@pytest.mark.parametrize("path", [
    "/pages/..%2F..%2Fagree-index.json/image",
    "/pages/%2e%2e%2f%2e%2e%2fetc%2fpasswd/image",
    "/pages/../../etc/passwd",
    f"/pages/{uuid.uuid4()}/image",
    "/pages/not-a-uuid/heatmap?query=x",
    "/static/../agree-index.json",
    "/static/%2e%2e/%2e%2e/index/agree-index.json",
])
def test_page_routes_serve_only_index_images(server, path):
    with httpx.Client(base_url=server) as client:
        r = client.send(httpx.Request("GET", server + path))  # sent as written, not normalised
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert "Traceback" not in r.text and "version" not in r.text


def test_oversize_upload(index_copy, tmp_path):
    pdf = make_pdf(tmp_path / "big.pdf", ["lorem ipsum " * 400] * 30)
    assert pdf.stat().st_size > 5_000
    with serve_in_thread(index_copy, max_upload_bytes=5_000) as url:
        r = httpx.post(url + "/documents", files=[("files", ("big.pdf", pdf.read_bytes(), "application/pdf"))])
        assert r.status_code == 413 and "5,000 bytes" in r.json()["error"]

        def chunks():  # no Content-Length: the limit holds while the body streams in
            data = pdf.read_bytes()
            yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.pdf\"\r\n\r\n"
            for i in range(0, len(data), 4096):
                yield data[i:i + 4096]
            yield b"\r\n--b--\r\n"

        r = httpx.post(url + "/documents", content=chunks(),
                       headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413, r.text
        assert httpx.get(url + "/info").json()["pages"] == 9
        assert not any((index_copy / "uploads").glob("*.pdf"))
