"""A Qdrant REST endpoint for qdrant-client, as an ``httpx.MockTransport``: every request
body is validated against Qdrant's OpenAPI schema (../shared/qdrant/openapi.json, release
1.19) and answered with a well-formed reply from a small in-memory store (points by id per
collection; filters are not evaluated, so replies are well-formed, not meaningful beyond ids).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

OPENAPI = Path(__file__).resolve().parents[1] / ".." / "shared" / "qdrant" / "openapi.json"


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` as JSON Schema (``type: [T, "null"]``)."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False):
        if "type" in node:
            node["type"] = [node["type"], "null"]
        elif not node or set(node) <= {"description"}:
            node["type"] = "null"
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


class Schema:
    def __init__(self, path: Path = OPENAPI):
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        spec = _nullable(json.loads(path.read_text()))
        self.spec = spec
        self.registry = Registry().with_resource("urn:qdrant", Resource(spec, DRAFT202012))
        self._validator = Draft202012Validator
        self.routes = []
        for template, methods in spec["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
            for method, op in methods.items():
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
                self.routes.append((method.upper(), pattern, template, body.get("schema")))

    def route(self, method: str, path: str) -> tuple[str, dict | None]:
        for m, pattern, template, schema in self.routes:
            if m == method and pattern.match(path):
                return template, schema
        raise AssertionError(f"{method} {path} is not a route of Qdrant's REST API")

    def errors(self, schema: dict, body: Any) -> list[str]:
        ref = {"$ref": "urn:qdrant" + schema["$ref"]} if "$ref" in schema else schema
        v = self._validator(ref, registry=self.registry)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(body)]


class MockQdrant:
    """Answers qdrant-client; records ``(method, route template, body, bytes)`` per request."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.requests: list[tuple[str, str, Any, int]] = []
        self.collections: dict[str, dict[str, dict]] = {}

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path == "/" and method == "GET":
            return httpx.Response(200, json={"title": "qdrant", "version": "1.19.0"})
        template, schema = self.schema.route(method, path)
        body = json.loads(request.content) if request.content else None
        self.requests.append((method, template, body, len(request.content or b"")))
        if schema is not None:
            errors = self.schema.errors(schema, body)
            assert not errors, f"{method} {template}: {errors[:5]}\nbody: {json.dumps(body)[:2000]}"
        name = path.split("/")[2]
        points = self.collections.get(name)
        ok = {"operation_id": len(self.requests), "status": "completed"}
        if template.endswith("/exists"):
            return _reply({"exists": name in self.collections})
        if template == "/collections/{collection_name}" and method == "PUT":
            self.collections[name] = {}
            return _reply(True)
        if template.endswith("/index"):
            return _reply(ok)
        if template.endswith("/points") and method == "PUT":
            for p in body["points"]:
                points[str(p["id"])] = {"id": p["id"], "payload": p.get("payload") or {}}
            return _reply(ok)
        if template.endswith("/points") and method == "POST":  # retrieve
            return _reply([points[str(i)] for i in body["ids"] if str(i) in points])
        if template.endswith("/points/delete"):
            for i in body.get("points", []):
                points.pop(str(i), None)
            return _reply(ok)
        if template.endswith("/points/payload") or template.endswith("/points/payload/delete"):
            for i in body.get("points") or []:
                if str(i) in points:
                    if template.endswith("/delete"):
                        for k in body["keys"]:
                            points[str(i)]["payload"].pop(k, None)
                    else:
                        points[str(i)]["payload"].update(body["payload"])
            return _reply(ok)
        if template.endswith("/points/scroll"):
            return _reply({"points": [], "next_page_offset": None})
        if template.endswith("/points/count"):
            return _reply({"count": len(points)})
        if template.endswith("/points/query/batch"):
            ids = list(points)[: body["searches"][0]["limit"]] if body["searches"] else []
            return _reply([{"points": [{"id": i, "version": 0, "score": 1.0, "payload": points[i]["payload"]}
                                       for i in ids]} for _ in body["searches"]])
        raise AssertionError(f"the mock does not answer {method} {template}")


def _reply(result: Any) -> httpx.Response:
    return httpx.Response(200, json={"result": result, "status": "ok", "time": 0.0})
