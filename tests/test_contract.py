"""The server engine's real HTTP path, checked against Qdrant's REST schema.

qdrant-client runs unchanged, pointed at an ``httpx.MockTransport``: every request body the
server engine sends (create collection, payload indexes, upsert, delete by ids and by
filter, set and delete payload, retrieve, scroll, count, batch query with prefetch and
filters) is validated against ../shared/qdrant/openapi.json (Qdrant 1.19). This proves the
requests are ones a server accepts, not what a server does with them: behaviour is tested
through qdrant-client's local mode (tests/test_index.py, tests/test_engines.py) and, with
AGREE_QDRANT_URL set, a real server (tests/test_qdrant_server.py).
"""

import numpy as np
import pytest

pytest.importorskip("qdrant_client")
pytest.importorskip("jsonschema")

from agree_core.index import PageIndex  # noqa: E402
from agree_core.index import filters as F  # noqa: E402
from agree_core.index.engines.base import Point  # noqa: E402
from conftest import make_pdf  # noqa: E402
from qdrant_mock import OPENAPI, MockQdrant, Schema  # noqa: E402


@pytest.fixture(scope="module")
def schema():
    if not OPENAPI.is_file():
        pytest.fail(f"Qdrant's OpenAPI schema is missing at {OPENAPI}")
    return Schema()


def _routes(mock):
    return {(m, t) for m, t, _, _ in mock.requests}


def test_every_request_of_an_index_session_is_valid_for_qdrant(tmp_path, schema, encoder):
    mock = MockQdrant(schema)
    pdf = make_pdf(tmp_path / "a.pdf", ["solar panels on the roof", "parking for visitors"])
    with PageIndex.open("qdrant://qdrant.example:6333/pages", encoder, shard_number=2,
                        replication_factor=2, client_options={"transport": mock.transport(), "check_compatibility": False}) as index:
        assert index.add([pdf], metadata={"team": "ops"}, progress=False).ok
        index.search("solar", k=2, filters={"team": "ops", "page": {"gte": 1}})
        index.search_batch(["solar", "parking"], k=2, candidates=50,
                           filters={"operator": "OR", "conditions": [
                               {"field": "meta.team", "operator": "==", "value": "ops"},
                               {"field": "meta.when", "operator": ">", "value": "2024-01-01"}]})
        index.add([pdf], metadata={"team": "energy"}, progress=False)  # metadata replaced in place
        index.delete(pdf)
        engine = index.engine
        v = np.ones((3, index.config.dim), dtype=np.float32)
        engine.upsert([Point("00000000-0000-0000-0000-000000000001", {"tokens": v, "pooled": v[:1]},
                             {"kind": "record", "flag": True})])
        every = F.And((F.Match("flag", True), F.MatchAny("kind", ("record", "x")), F.IsEmpty("gone"),
                       F.Not(F.HasId(("00000000-0000-0000-0000-000000000002",))),
                       F.Or((F.Range("n", gte=1.5), F.DateRange("d", lt="2025-01-01T00:00:00")))))
        engine.set_payload({"x": 1}, where=every)
        engine.delete_payload(["x"], ids=["00000000-0000-0000-0000-000000000001"])
        engine.count(every)
        list(engine.scroll(every, payload=["kind"], vectors=["tokens"]))
        engine.search(v, 5, using="tokens", where=every, prefetch="pooled", candidates=20,
                      exclude=["cells"])
        engine.delete(["00000000-0000-0000-0000-000000000001"])
        engine.delete_where(every)
    routes = _routes(mock)
    for route in [("PUT", "/collections/{collection_name}"), ("PUT", "/collections/{collection_name}/index"),
                  ("PUT", "/collections/{collection_name}/points"), ("POST", "/collections/{collection_name}/points"),
                  ("POST", "/collections/{collection_name}/points/delete"),
                  ("POST", "/collections/{collection_name}/points/payload"),
                  ("POST", "/collections/{collection_name}/points/payload/delete"),
                  ("POST", "/collections/{collection_name}/points/scroll"),
                  ("POST", "/collections/{collection_name}/points/count"),
                  ("POST", "/collections/{collection_name}/points/query/batch")]:
        assert route in routes, f"{route} was never sent"
    create = [b for m, t, b, _ in mock.requests if t == "/collections/{collection_name}" and b.get("vectors")][0]
    assert create["shard_number"] == 2 and create["replication_factor"] == 2
    tokens, pooled = create["vectors"]["tokens"], create["vectors"]["pooled"]
    assert tokens["multivector_config"] == {"comparator": "max_sim"} and tokens["hnsw_config"]["m"] == 0
    assert tokens["on_disk"] is True and pooled["on_disk"] is False and tokens["datatype"] == "turbo4"  # the default
    queries = [b for m, t, b, _ in mock.requests if t.endswith("/query/batch")]
    assert any(s.get("prefetch") and s["prefetch"]["using"] == "pooled" and s["prefetch"]["limit"] == 50
               for q in queries for s in q["searches"])


def test_the_schema_catches_a_malformed_body(schema):
    """Negative control: the validation above would fail on a body a server rejects."""
    _, upsert = schema.route("PUT", "/collections/pages/points")
    good = {"points": [{"id": "00000000-0000-0000-0000-000000000001", "vector": {"tokens": [[0.1, 0.2]]},
                        "payload": {}}]}
    assert schema.errors(upsert, good) == []
    assert schema.errors(upsert, {"points": [{"vector": {"tokens": [[0.1]]}}]})  # no id
    assert schema.errors(upsert, {"points": [{"id": 1.5, "vector": {"tokens": [[0.1]]}}]})  # float id
    _, query = schema.route("POST", "/collections/pages/points/query/batch")
    assert schema.errors(query, {"searches": [{"query": [[0.1]], "limit": "ten"}]})
    assert schema.errors(query, {"searches": [{"query": [[0.1]], "filter": {"must": "team"}}]})
    _, create = schema.route("PUT", "/collections/pages")
    assert schema.errors(create, {"vectors": {"tokens": {"size": 8, "distance": "MaxSim"}}})


def test_a_pooled_turbo4_index_is_created_as_qdrant_119_accepts_it(tmp_path, schema, encoder):
    mock = MockQdrant(schema)
    pdf = make_pdf(tmp_path / "a.pdf", ["solar panels on the roof and a battery", "parking for visitors"])
    with PageIndex.open("qdrant://qdrant.example:6333/small", encoder, pool_factor=2, vector_datatype="turbo4",
                        client_options={"transport": mock.transport(), "check_compatibility": False}) as index:
        assert index.add([pdf], progress=False).ok
        info = index.info()
    assert info["pool_factor"] == 2 and info["bytes_on_disk"] is None  # the server API has no sizes
    create = [b for m, t, b, _ in mock.requests if t == "/collections/{collection_name}" and b.get("vectors")][0]
    assert {v["datatype"] for k, v in create["vectors"].items() if k != "fde"} == {"turbo4"}
    upserts = [p for m, t, b, _ in mock.requests if t.endswith("/points") and m == "PUT" for p in b["points"]]
    page = next(p for p in upserts if "pool_of" in p["payload"])
    assert len(page["vector"]["tokens"]) == max(page["payload"]["pool_of"]) + 1 < len(page["payload"]["cells"])


def test_a_server_too_old_for_turbo4_is_refused_before_anything_is_written(tmp_path, schema, encoder):
    import httpx

    from agree_core.index.config import IndexConfigError

    class OldQdrant(MockQdrant):
        def handle(self, request):
            if request.url.path == "/" and request.method == "GET":
                return httpx.Response(200, json={"title": "qdrant", "version": "1.18.2"})
            return super().handle(request)

    mock = OldQdrant(schema)
    options = {"client_options": {"transport": mock.transport(), "check_compatibility": False}}
    with pytest.raises(IndexConfigError, match=r"runs 1\.18\.2, which cannot store turbo4 vectors "
                                               r"\(Qdrant 1\.19 or later does\).*--vector-datatype float16"):
        PageIndex.open("qdrant://qdrant.example:6333/old", encoder, **options)
    assert not any(b and b.get("vectors") for _, _, b, _ in mock.requests)  # no page collection made
    assert not any(m == "PUT" and t.endswith("/points") for m, t, _, _ in mock.requests)  # no config written
    with PageIndex.open("qdrant://qdrant.example:6333/old", encoder, vector_datatype="float16", **options) as index:
        assert index.config.vector_datatype == "float16"  # what the message says to do works
