"""The HTTP API of `latentsearch serve`, through FastAPI's TestClient (no socket, no thread
but the app's own), plus one real `latentsearch serve` process.

Every endpoint; every error status in the one shape ``{"error", "type"}``; the token rules;
the body, k and batch caps; names that try to leave the root; uploads that are not images;
durability (what an answer acknowledged, a fresh ``ls.open`` finds); reloads when another
Collection object or process changes a collection; collections built after the start.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import struct
import time
import zlib
import http.client
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import latentsearch as ls  # noqa: E402
from latentsearch.cli import main  # noqa: E402
from latentsearch.errors import CollectionNotFound, InvalidInput  # noqa: E402
from latentsearch.io.png import PNG_SIGNATURE, encode_png  # noqa: E402
from latentsearch.serve import app as app_module  # noqa: E402
from latentsearch.serve import registry as registry_module  # noqa: E402
from latentsearch.serve.app import create_app  # noqa: E402
from latentsearch.serve.schemas import MAX_BATCH, MAX_K  # noqa: E402
from latentsearch.storage.lock import writer_lock  # noqa: E402

from conftest import clustered  # noqa: E402

DIM = 8


def error_of(r, status: int, kind: str) -> str:
    """The response is the one error shape with this status and type; returns the message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "type"}, body
    assert body["type"] == kind, body
    assert body["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


@pytest.fixture
def emb(root):
    """A small labelled vector collection 'emb' (200 x 8, labels 0..4) under ``root``."""
    x, labels = clustered(200, dim=DIM, clusters=5, seed=3)
    col = ls.build_vectors(x, [str(v) for v in labels], name="emb", root=root, quiet=True)
    return col, x


@pytest.fixture
def client(root, emb):
    return TestClient(create_app(root, reload_every=0.0))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A module-wide root with an image collection 'digits' (300 MNIST digits, one epoch of
    the dense autoencoder) and a text collection 'notes' (60 news lines, one epoch)."""
    root = tmp_path_factory.mktemp("media") / "indexes"
    src = root.parent
    z = np.load(Path(ls.__file__).parent / "data" / "mnist_5k.npz")
    np.savez(src / "digits.npz", x=z["x"][:300], y=z["y"][:300])
    ls.build_images(src / "digits.npz", name="digits", root=root, encoder="dense", epochs=1,
                    quiet=True)
    news = (Path(ls.__file__).parent / "data" / "news_300.txt").read_text(encoding="utf-8")
    (src / "notes.txt").write_text("\n".join([t for t in news.splitlines() if t.strip()][:60]),
                                   encoding="utf-8")
    ls.build_text(src / "notes.txt", name="notes", root=root, epochs=1, quiet=True)
    return root


@pytest.fixture
def media_client(media):
    return TestClient(create_app(media))


def png_b64(pixels: np.ndarray) -> str:
    return base64.b64encode(encode_png(pixels)).decode("ascii")


def png_pixels(data: bytes) -> np.ndarray:
    """The pixels of a served PNG: by Pillow when installed, else an 8-bit gray PNG with
    unfiltered rows (what latentsearch's own encoder writes) read by hand."""
    assert data.startswith(PNG_SIGNATURE)
    try:
        from PIL import Image
    except ImportError:
        w, h, depth, color = struct.unpack(">IIBB", data[16:26])
        assert (depth, color) == (8, 0)
        idat, pos = b"", 8
        while pos < len(data):
            (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
            idat += data[pos + 8:pos + 8 + n] if kind == b"IDAT" else b""
            pos += 12 + n
        rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, w + 1)
        assert not rows[:, 0].any()
        return rows[:, 1:]
    return np.asarray(Image.open(io.BytesIO(data)))


# -- about the server ----------------------------------------------------------------------


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": ls.__version__, "collections": 1}


def test_collections_lists_each_served_collection(client):
    r = client.get("/collections")
    assert r.status_code == 200
    assert r.json() == {"collections": [
        {"name": "emb", "modality": "vectors", "count": 200, "dim": DIM, "metric": "l2",
         "index": "Flat"}]}


def test_collection_info_then_evaluate_computed_once_per_generation(client, emb, monkeypatch):
    calls = []
    real = registry_module.evaluate
    monkeypatch.setattr(registry_module, "evaluate", lambda col: calls.append(1) or real(col))
    info = client.get("/collections/emb").json()
    assert info["name"] == "emb" and info["count"] == 200 and info["dim"] == DIM
    assert info["evaluate"] is None  # not computed yet
    report = client.get("/collections/emb/evaluate").json()
    assert report == ls.evaluate(emb[0]).to_dict()
    assert set(report) >= {"agreement", "baselines", "agreement_by_distance", "recall_vs_exact"}
    assert client.get("/collections/emb/evaluate").json() == report
    assert client.get("/collections/emb").json()["evaluate"] == report
    assert len(calls) == 1  # cached
    client.post("/collections/emb/items", json={"vectors": [[0.5] * DIM], "labels": ["1"]})
    assert client.get("/collections/emb").json()["evaluate"] is None  # a new generation
    assert client.get("/collections/emb/evaluate").json()["n_queries"] == 201
    assert len(calls) == 2


def test_openapi_and_docs(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/collections", "/collections/{name}", "/collections/{name}/evaluate",
            "/collections/{name}/search", "/collections/{name}/items",
            "/collections/{name}/items/{item_id}",
            "/collections/{name}/items/{item_id}/image.png"} <= set(paths)
    schema = paths["/collections/{name}/search"]["post"]["requestBody"]
    assert "SearchRequest" in json.dumps(schema)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-static/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()  # the machine may be offline
    js = client.get("/docs-static/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/docs-static/..%2Fswagger-ui.css").status_code == 404


# -- searching -----------------------------------------------------------------------------


def test_search_by_vector_equals_the_library(client, emb):
    col, x = emb
    r = client.post("/collections/emb/search", json={"vector": x[3].tolist(), "k": 5})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert hits == [h.to_dict() for h in col.search(x[3], k=5)]
    assert hits[0]["id"] == 3 and hits[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert set(hits[0]) == {"id", "distance", "label", "source", "text"}


def test_search_batch_of_vectors(client, emb):
    col, x = emb
    r = client.post("/collections/emb/search", json={"vectors": x[:4].tolist(), "k": 3})
    assert r.status_code == 200
    batches = r.json()["batches"]
    assert batches == [[h.to_dict() for h in hits] for hits in col.search_batch(x[:4], k=3)]


def test_search_by_id_filter_recall_exact(client, emb):
    col, _ = emb
    hits = client.post("/collections/emb/search", json={"id": 7, "k": 4}).json()["hits"]
    assert 7 not in [h["id"] for h in hits] and len(hits) == 4
    assert hits == [h.to_dict() for h in col.neighbors(7, k=4)]
    label = col.get([7])[0].label
    body = {"id": 7, "k": 5, "where": {"label": label}, "recall": 0.99, "exact": True}
    hits = client.post("/collections/emb/search", json=body).json()["hits"]
    assert hits and all(h["label"] == label for h in hits)


def test_k_is_capped_and_may_exceed_the_collection(client, emb):
    for k in (0, -1, MAX_K + 1):
        error_of(client.post("/collections/emb/search", json={"id": 1, "k": k}), 422,
                 "ValidationError")
    hits = client.post("/collections/emb/search", json={"id": 1, "k": MAX_K}).json()["hits"]
    assert len(hits) == 199


def test_batch_size_is_capped(client):
    body = {"vectors": [[0.0] * DIM] * (MAX_BATCH + 1), "k": 1}
    msg = error_of(client.post("/collections/emb/search", json=body), 422, "ValidationError")
    assert "vectors" in msg
    body = {"texts": ["a"] * (MAX_BATCH + 1)}
    error_of(client.post("/collections/emb/search", json=body), 422, "ValidationError")


def test_search_by_text_and_texts(media_client):
    hits = media_client.post("/collections/notes/search",
                             json={"text": "bushfires near Sydney", "k": 3}).json()["hits"]
    assert len(hits) == 3 and all(isinstance(h["text"], str) for h in hits)
    r = media_client.post("/collections/notes/search", json={"texts": ["rain", "election"], "k": 2})
    assert [len(b) for b in r.json()["batches"]] == [2, 2]


def test_search_by_uploaded_image_png_and_data_url(media_client, media):
    col = ls.open("digits", media)
    pixels = col.images([5])[0]
    hits = media_client.post("/collections/digits/search",
                             json={"image": png_b64(pixels), "k": 3}).json()["hits"]
    assert hits[0]["id"] == 5 and hits[0]["distance"] == pytest.approx(0.0, abs=1e-4)
    url = "data:image/png;base64," + png_b64(pixels)
    again = media_client.post("/collections/digits/search", json={"image": url, "k": 3})
    assert again.json()["hits"] == hits


def test_uploads_that_are_not_images_are_400(media_client):
    for junk in (base64.b64encode(b"hello, this is text").decode(), "!!not base64!!",
                 "data:text/plain,hello"):
        error_of(media_client.post("/collections/digits/search", json={"image": junk}), 400,
                 "InvalidInput")
    broken = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
    msg = error_of(media_client.post("/collections/digits/search", json={"image": broken}),
                   400, "InvalidInput")
    assert "latentsearch-upload" not in msg and "/tmp" not in msg  # no server paths


def test_wrong_query_kinds_are_400(client, media_client, emb):
    msg = error_of(client.post("/collections/emb/search", json={"vector": [1.0, 2.0]}), 400,
                   "DimensionMismatch")
    assert "dimension" in msg
    error_of(client.post("/collections/emb/search", json={"text": "hello"}), 400, "EncoderError")
    error_of(client.post("/collections/emb/search",
                         json={"vectors": [[1.0] * DIM, [1.0] * (DIM - 1)]}), 400, "InvalidInput")
    png = png_b64(np.zeros((28, 28), np.uint8))
    error_of(client.post("/collections/emb/search", json={"image": png}), 400, "EncoderError")
    error_of(media_client.post("/collections/notes/search", json={"image": png}), 400,
             "EncoderError")


def test_malformed_requests_are_422(client):
    cases = [
        {"json": {}},  # no query
        {"json": {"id": 1, "text": "x"}},  # two
        {"json": {"id": "seven"}},
        {"json": {"vector": ["a", "b"]}},
        {"json": {"id": 1, "recall": 1.5}},
        {"json": {"id": 1, "bogus": True}},  # unknown field (a typo)
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"content": b'{"id": 1}'},  # no Content-Type
    ]
    for case in cases:
        error_of(client.post("/collections/emb/search", **case), 422, "ValidationError")
    error_of(client.get("/collections/emb/items/abc"), 422, "ValidationError")


# -- items ---------------------------------------------------------------------------------


def test_added_vectors_are_durable_and_searchable(client, root, emb):
    new = np.full((2, DIM), 9.0, np.float32)
    body = {"vectors": new.tolist(), "labels": ["new", 7], "extra": [{"lang": "en"}, None]}
    r = client.post("/collections/emb/items", json=body)
    assert r.status_code == 200
    ids = r.json()["ids"]
    assert ids == [200, 201]
    fresh = ls.open("emb", root)  # what was acknowledged is on disk
    assert [h.label for h in fresh.get(ids)] == ["new", "7"]
    assert fresh.search(new[0], k=1)[0].id in ids
    item = client.get("/collections/emb/items/200").json()
    assert item["id"] == 200 and item["label"] == "new" and item["text"] is None
    hits = client.post("/collections/emb/search", json={"vector": new[0].tolist(), "k": 2})
    assert {h["id"] for h in hits.json()["hits"]} == set(ids)


def test_remove_then_the_item_is_gone(client, root):
    r = client.request("DELETE", "/collections/emb/items", json={"ids": [3, 4]})
    assert r.status_code == 200 and r.json() == {"removed": 2}
    error_of(client.get("/collections/emb/items/3"), 404, "UnknownId")
    assert 3 not in ls.open("emb", root).ids()
    error_of(client.request("DELETE", "/collections/emb/items", json={"ids": [3]}), 404,
             "UnknownId")


def test_add_checks_what_the_library_checks(client):
    error_of(client.post("/collections/emb/items", json={"vectors": [[1.0] * (DIM + 1)]}), 400,
             "DimensionMismatch")
    error_of(client.post("/collections/emb/items",
                         json={"vectors": [[1.0] * DIM], "labels": ["a", "b"]}), 400,
             "InvalidInput")
    error_of(client.post("/collections/emb/items",
                         json={"vectors": [[1.0] * DIM], "extra": [{}, {}]}), 400, "InvalidInput")
    error_of(client.post("/collections/emb/items", json={"texts": ["hello"]}), 400,
             "EncoderError")
    error_of(client.post("/collections/emb/items", json={"texts": ["a"], "extra": [{}]}), 422,
             "ValidationError")
    error_of(client.post("/collections/emb/items", json={"vectors": [[0.0] * DIM] * 10_001}),
             422, "ValidationError")


def test_add_texts_and_images(media_client, media):
    r = media_client.post("/collections/notes/items",
                          json={"texts": ["A new line about rain in Sydney."], "labels": ["x"]})
    assert r.status_code == 200, r.text
    (tid,) = r.json()["ids"]
    item = media_client.get(f"/collections/notes/items/{tid}").json()
    assert item["text"] == "A new line about rain in Sydney." and item["label"] == "x"

    digit = ls.open("digits", media).images([0])[0]
    r = media_client.post("/collections/digits/items",
                          json={"images": [png_b64(digit), png_b64(255 - digit)], "labels": [7, 8]})
    assert r.status_code == 200, r.text
    ids = r.json()["ids"]
    fresh = ls.open("digits", media)
    assert [h.label for h in fresh.get(ids)] == ["7", "8"]
    assert np.array_equal(fresh.images(ids[:1])[0], digit)
    error_of(media_client.post("/collections/digits/items",
                               json={"images": [base64.b64encode(b"GIF? no").decode()]}), 400,
             "InvalidInput")


def test_item_image_png_is_scaled_up(media_client, media, client):
    pixels = ls.open("digits", media).images([2])[0]
    r = media_client.get("/collections/digits/items/2/image.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = png_pixels(r.content)
    assert img.shape[:2] == (112, 112)
    assert np.array_equal(img.reshape(112, 112), np.repeat(np.repeat(pixels[..., 0], 4, 0), 4, 1))
    error_of(media_client.get("/collections/digits/items/99999/image.png"), 404, "UnknownId")
    error_of(client.get("/collections/emb/items/0/image.png"), 404, "NoImages")


def test_a_held_writer_lock_is_409(client, root):
    with writer_lock(root / "emb"):
        r = client.post("/collections/emb/items", json={"vectors": [[0.0] * DIM]})
        error_of(r, 409, "CollectionLocked")
        r = client.request("DELETE", "/collections/emb/items", json={"ids": [1]})
        error_of(r, 409, "CollectionLocked")
        assert client.post("/collections/emb/search", json={"id": 1}).status_code == 200
    assert client.post("/collections/emb/items", json={"vectors": [[0.0] * DIM]}).status_code == 200


def test_read_only_refuses_writes_with_403(root, emb):
    c = TestClient(create_app(root, read_only=True))
    error_of(c.post("/collections/emb/items", json={"vectors": [[0.0] * DIM]}), 403, "ReadOnly")
    error_of(c.request("DELETE", "/collections/emb/items", json={"ids": [1]}), 403, "ReadOnly")
    assert c.post("/collections/emb/search", json={"id": 1}).status_code == 200
    assert len(ls.open("emb", root)) == 200


# -- names, routes, the page ---------------------------------------------------------------


def test_unknown_and_hostile_names_are_404(client, root, emb, tmp_path):
    outside = tmp_path / "outside"
    ls.build_vectors(emb[1][:20], None, name="secret", root=outside, quiet=True)
    os.symlink(outside / "secret", root / "linked")  # a link out of the root
    # (a literal ".." is resolved by the client before it is sent; encoded, it reaches the app)
    for name in ("nope", "%2E%2E", "%2e.", ".hidden", "linked", "emb%00", "-x"):
        error_of(client.get(f"/collections/{name}"), 404, "CollectionNotFound")
        error_of(client.post(f"/collections/{name}/search", json={"id": 1}), 404,
                 "CollectionNotFound")
    for path in ("/collections/..%2F..%2Fetc", "/collections/emb%2F..%2F",
                 "/collections/a/b/search"):
        assert client.get(path).status_code == 404
    assert [c["name"] for c in client.get("/collections").json()["collections"]] == ["emb"]
    error_of(client.get("/collections/emb/items/123456"), 404, "UnknownId")
    error_of(client.get("/no/such/route"), 404, "NotFound")
    error_of(client.request("DELETE", "/collections/emb"), 405, "MethodNotAllowed")


def test_names_given_to_the_app_are_checked(root, emb):
    with pytest.raises(InvalidInput):
        create_app(root, ["../emb"])
    with pytest.raises(CollectionNotFound):
        create_app(root, ["nope"])


def test_the_page_is_served_without_a_token(root, emb, tmp_path, monkeypatch):
    c = TestClient(create_app(root, token="t0ken"))
    page = app_module.PAGE_DIR
    if (page / "index.html").is_file():
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        for name in sorted(p.name for p in page.iterdir() if p.is_file()):
            assert c.get(f"/static/{name}").status_code == 200
    error_of(c.get("/static/nope.js"), 404, "NotFound")
    assert c.get("/static/..%2Fapp.py").status_code == 404
    monkeypatch.setattr(app_module, "PAGE_DIR", tmp_path / "no-page-yet")
    error_of(c.get("/"), 404, "NotFound")


# -- the token, CORS, the caps -------------------------------------------------------------


def test_token_rules(root, emb, monkeypatch):
    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    c = TestClient(create_app(root, token="s3cret"))
    r = c.get("/collections")
    error_of(r, 401, "Unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    error_of(c.get("/collections", headers={"Authorization": "Bearer wrong"}), 401,
             "Unauthorized")
    error_of(c.get("/collections", headers={"Authorization": "Basic s3cret"}), 401,
             "Unauthorized")
    error_of(c.post("/collections/emb/search", json={"id": 1}), 401, "Unauthorized")
    error_of(c.get("/openapi.json"), 401, "Unauthorized")
    ok = c.get("/collections", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["collections"][0]["name"] == "emb"
    assert c.get("/health").status_code == 200  # never needs one
    assert (b"wrong", b"s3cret") in seen and (b"s3cret", b"s3cret") in seen  # constant time


def test_cors_only_when_asked(root, emb):
    origin = {"Origin": "http://example.org"}
    plain = TestClient(create_app(root))
    assert "access-control-allow-origin" not in plain.get("/collections", headers=origin).headers
    c = TestClient(create_app(root, cors="http://example.org", token="t"))
    pre = c.options("/collections/emb/search", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "http://example.org"
    denied = c.get("/collections", headers=origin)  # 401, still readable by the page
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "http://example.org"


def test_bodies_over_the_cap_are_413(root, emb):
    c = TestClient(create_app(root, max_body=2000))
    small = {"vector": [0.0] * DIM}
    assert c.post("/collections/emb/search", json=small).status_code == 200
    big = {"vectors": [[0.0] * DIM] * 100}  # ~3.3 kB with its Content-Length
    msg = error_of(c.post("/collections/emb/search", json=big), 413, "PayloadTooLarge")
    assert "2,000" in msg

    def chunks():  # streamed without a Content-Length: the bytes are counted
        yield b'{"vectors": ['
        for _ in range(200):
            yield b"[0,0,0,0,0,0,0,0],"
        yield b"[0,0,0,0,0,0,0,0]]}"

    r = c.post("/collections/emb/search", content=chunks(),
               headers={"content-type": "application/json"})
    error_of(r, 413, "PayloadTooLarge")


def test_a_bug_is_a_logged_500_without_traceback(client, monkeypatch, caplog):
    def broken(self, *a, **kw):
        raise RuntimeError("boom at /very/secret/path")

    monkeypatch.setattr(ls.Collection, "neighbors", broken)
    with caplog.at_level(logging.ERROR, logger="latentsearch.serve"):
        r = client.post("/collections/emb/search", json={"id": 1})
    msg = error_of(r, 500, "InternalError")
    assert "secret" not in msg and "boom" not in msg
    logged = [rec for rec in caplog.records if rec.exc_info]
    assert logged and "boom" in str(logged[0].exc_info[1])


# -- changes on disk -----------------------------------------------------------------------


def test_a_change_by_another_collection_object_is_reloaded(root, emb):
    c = TestClient(create_app(root, reload_every=0.05))
    assert c.get("/collections/emb").json()["count"] == 200
    other = ls.open("emb", root)  # another writer (could be another process)
    (new_id,) = other.add(np.full((1, DIM), -7.0, np.float32), ["other"]).tolist()
    time.sleep(0.1)
    assert c.get("/collections/emb").json()["count"] == 201
    hits = c.post("/collections/emb/search", json={"vector": [-7.0] * DIM, "k": 1}).json()
    assert hits["hits"][0]["id"] == new_id
    assert c.get(f"/collections/emb/items/{new_id}").json()["label"] == "other"


def test_a_rebuilt_collection_is_served_anew(root, emb):
    c = TestClient(create_app(root, reload_every=0.0))
    assert c.get("/collections/emb").json()["dim"] == DIM
    ls.build_vectors(np.eye(4, dtype=np.float32), None, name="emb", root=root, overwrite=True,
                     quiet=True)
    info = c.get("/collections/emb").json()
    assert (info["dim"], info["count"]) == (4, 4)
    assert c.post("/collections/emb/search", json={"vector": [1, 0, 0, 0], "k": 1}).json()[
        "hits"][0]["id"] == 0


def test_collections_built_later_appear_unless_names_were_given(root, emb):
    every = TestClient(create_app(root))
    only = TestClient(create_app(root, ["emb"]))
    ls.build_vectors(emb[1][:30], None, name="later", root=root, quiet=True)
    assert [r["name"] for r in every.get("/collections").json()["collections"]] == ["emb", "later"]
    assert every.get("/health").json()["collections"] == 2
    assert every.post("/collections/later/search", json={"id": 0, "k": 2}).status_code == 200
    assert [r["name"] for r in only.get("/collections").json()["collections"]] == ["emb"]
    error_of(only.get("/collections/later"), 404, "CollectionNotFound")


def test_a_deleted_collection_is_404(root, emb):
    import shutil

    c = TestClient(create_app(root, reload_every=0.0))
    assert c.get("/collections/emb").status_code == 200
    shutil.rmtree(root / "emb")
    error_of(c.get("/collections/emb"), 404, "CollectionNotFound")
    assert c.get("/collections").json() == {"collections": []}


# -- the command ---------------------------------------------------------------------------


def test_serve_refuses_an_open_host_without_a_token(root, emb, monkeypatch):
    monkeypatch.delenv("LATENTSEARCH_TOKEN", raising=False)
    r = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--root", str(root)])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --host 0.0.0.0")
    assert "--token" in lines[0]
    r = CliRunner().invoke(main, ["serve", "nope", "--root", str(root)])
    assert r.exit_code == 1 and "error: no collection 'nope'" in r.output


def test_serve_runs_and_answers(root, emb):
    env = {**os.environ, "LATENTSEARCH_TOKEN": "tok"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentsearch", "serve", "--root", str(root), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        found = re.fullmatch(r"serving 1 collection at http://127\.0\.0\.1:(\d+)\n", line)
        assert found, (line, proc.stderr.read() if proc.poll() is not None else "")
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=30)
        conn.request("GET", "/health")
        assert json.loads(conn.getresponse().read())["status"] == "ok"
        conn.request("POST", "/collections/emb/search", body=json.dumps({"id": 0, "k": 2}),
                     headers={"Content-Type": "application/json", "Authorization": "Bearer tok"})
        r = conn.getresponse()
        assert r.status == 200 and len(json.loads(r.read())["hits"]) == 2
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
