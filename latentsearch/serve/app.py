"""The HTTP API of ``latentsearch serve``: a FastAPI app over the collections under a root.

Search and write handlers are plain ``def``: FastAPI runs them in its thread pool, off the
event loop, and one Collection per name serves every thread (searches read an immutable
snapshot; writes queue on the collection's locks and answer after the commit, so an id in an
answer is durable). Bodies are parsed and answers written with orjson
(``latentsearch.serve.jsonio``). Errors are ``{"error", "type"}`` with a 4xx status (see
``latentsearch.serve.responses``); the token, the body cap and the last-resort 500 are the
:class:`~latentsearch.serve.guard.Guard` around the app.

Sharded collections are served like the others (one name; ``latentsearch.collection.sharded``
fans each query out to the shards and merges the answers). With a ``cluster``
(``latentsearch serve --ray``) each shard lives in a Ray actor, placed by Ray, and the
server only encodes queries and merges; unsharded collections stay in this process either
way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse, Response

from latentsearch.collection import Collection
from latentsearch.errors import EncoderError, InvalidInput
from latentsearch.serve.guard import Guard
from latentsearch.serve.images import read_upload, thumbnail_png
from latentsearch.serve.registry import RELOAD_EVERY, Registry
from latentsearch.serve.jsonio import FastJSON, JSONRoute, hit_dicts
from latentsearch.serve.responses import ApiError, install_handlers
from latentsearch.serve.schemas import (
    AddRequest,
    AddResponse,
    BatchResponse,
    CollectionsResponse,
    ErrorResponse,
    HealthResponse,
    ItemOut,
    RemoveRequest,
    RemoveResponse,
    SearchRequest,
    SearchResponse,
)
from latentsearch.types import labels_as_text
from latentsearch.version import __version__

__all__ = ["create_app", "PAGE_DIR"]

#: the page's plain files (index.html, app.js, style.css), served as they are
PAGE_DIR = Path(__file__).resolve().parent / "page"
_PAGE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422)
}
_WRITE_ERRORS = {**_ERRORS, 403: {"model": ErrorResponse}, 409: {"model": ErrorResponse}}


def _array(rows: list[list[float]], what: str) -> np.ndarray:
    """A JSON list of vectors as float32 (n, dim); rows of unequal length are refused."""
    try:
        return np.asarray(rows, dtype=np.float32)
    except ValueError:
        raise InvalidInput(f"{what} must all have the same length") from None


def _needs(col: Collection, modality: str, what: str) -> None:
    if col.modality != modality:
        raise EncoderError(f"collection {col.name} holds {col.modality}; it cannot take {what}")



def _swagger_dir() -> Path | None:
    """Swagger UI's files from the swagger-ui-bundle package (the serve extra), if any."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    folder = Path(swagger_ui_bundle.swagger_ui_path)
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


_SWAGGER_DIR = _swagger_dir()

def create_app(
    root: str | os.PathLike | None,
    names: Sequence[str] | None = None,
    *,
    token: str | None = None,
    read_only: bool = False,
    max_body: int = 20_000_000,
    cors: str | Sequence[str] | None = None,
    reload_every: float = RELOAD_EVERY,
    cluster: Any = None,
) -> FastAPI:
    """The app serving ``names`` under ``root`` (every collection there when None).

    ``token``: every request but /health and the page needs ``Authorization: Bearer
    <token>``; ``read_only``: adds and removals answer 403; ``max_body``: the largest request
    body in bytes (413 above); ``cors``: origins allowed to call the API from a browser
    (none by default); ``reload_every``: seconds between looks at a manifest on disk;
    ``cluster`` (``latentsearch.scale.cluster.Cluster``): hold the shards of sharded
    collections in Ray actors on it (unsharded ones stay in this process).
    """
    registry = Registry(root, names, reload_every=reload_every, cluster=cluster)
    app = FastAPI(
        title="latentsearch",
        version=__version__,
        description="Nearest-neighbour search over the latentsearch collections under one root.",
        default_response_class=FastJSON,
        redoc_url=None,
        docs_url=None if _SWAGGER_DIR else "/docs",  # local Swagger UI below when installed
    )
    app.router.route_class = JSONRoute
    app.state.registry = registry
    install_handlers(app)

    def writable() -> None:
        if read_only:
            raise ApiError(403, "ReadOnly", "this server is read-only (--read-only): "
                                            "adds and removals are refused")

    # -- about the server and its collections ----------------------------------------------

    @app.get("/health", response_model=HealthResponse, tags=["server"])
    def health() -> Response:
        """Liveness; never needs a token."""
        return FastJSON({"status": "ok", "version": __version__,
                         "collections": len(registry.names())})

    @app.get("/collections", response_model=CollectionsResponse, responses=_ERRORS,
             tags=["collections"])
    def collections() -> Response:
        """Every served collection: name, modality, count, dim, metric, index."""
        return FastJSON({"collections": registry.rows()})

    @app.get("/collections/{name}", responses=_ERRORS, tags=["collections"])
    def collection_info(name: str) -> Response:
        """The collection's info (as `latentsearch info --json`) and its evaluate report, or
        null while none was computed for this generation."""
        col = registry.get(name)
        info = col.info
        info["evaluate"] = registry.report(name, info["generation"])
        return FastJSON(info)

    @app.get("/collections/{name}/evaluate", responses=_ERRORS, tags=["collections"])
    def collection_evaluate(name: str) -> Response:
        """The claim measured (`latentsearch evaluate --json`); computed once per generation."""
        return FastJSON(registry.evaluate(name))

    # -- searching -------------------------------------------------------------------------

    @app.post("/collections/{name}/search", response_model=SearchResponse | BatchResponse,
              responses=_ERRORS, tags=["search"])
    def search(name: str, body: SearchRequest) -> Response:
        """Nearest items to one query (`{"hits": [...]}`) or to each of a batch
        (`vectors`, `texts`: `{"batches": [[...], ...]}`)."""
        col = registry.get(name)
        knobs: dict[str, Any] = {"k": body.k, "where": body.where, "recall": body.recall,
                                 "exact": body.exact}
        if body.vectors is not None or body.texts is not None:
            queries = body.texts if body.vectors is None else _array(body.vectors, "vectors")
            batches = col.search_batch(queries, **knobs)
            return FastJSON({"batches": [hit_dicts(hits) for hits in batches]})
        if body.vector is not None:
            hits = col.search(np.asarray(body.vector, dtype=np.float32), **knobs)
        elif body.text is not None:
            hits = col.search(body.text, **knobs)
        elif body.image is not None:
            hits = col.search(read_upload(col, body.image), **knobs)
        else:
            hits = col.neighbors(body.id, **knobs)
        return FastJSON({"hits": hit_dicts(hits)})

    # -- items -----------------------------------------------------------------------------

    @app.post("/collections/{name}/items", response_model=AddResponse,
              responses=_WRITE_ERRORS, tags=["items"])
    def add_items(name: str, body: AddRequest) -> Response:
        """Append items; answers their new ids once the commit is durable."""
        writable()
        col = registry.get(name)
        if body.vectors is not None:
            vecs = _array(body.vectors, "vectors")
            n = len(vecs)
            extra = body.extra if body.extra is not None else [None] * n
            if len(extra) != n:
                raise InvalidInput(f"got {len(extra)} extra objects for {n} vectors")
            labels = labels_as_text(body.labels, n)
            records = [(label, None, None, e) for label, e in zip(labels, extra)]
            ids = col.add_vectors(vecs, records)
        elif body.texts is not None:
            _needs(col, "text", "texts")
            ids = col.add(body.texts, body.labels)
        else:
            _needs(col, "image", "images")
            ids = col.add(np.stack([read_upload(col, img) for img in body.images]), body.labels)
        return FastJSON({"ids": ids.tolist()})

    @app.delete("/collections/{name}/items", response_model=RemoveResponse,
                responses=_WRITE_ERRORS, tags=["items"])
    def remove_items(name: str, body: RemoveRequest) -> Response:
        """Remove items by id (an unknown id is a 404 and removes nothing)."""
        writable()
        return FastJSON({"removed": registry.get(name).remove(body.ids)})

    @app.get("/collections/{name}/items/{item_id}", response_model=ItemOut, responses=_ERRORS,
             tags=["items"])
    def get_item(name: str, item_id: int) -> Response:
        """One stored record."""
        item = registry.get(name).get([item_id])[0]
        return FastJSON({"id": item.id, "label": item.label, "source": item.source,
                         "text": item.text, "extra": getattr(item, "extra", None)})

    @app.get("/collections/{name}/items/{item_id}/image.png", responses=_ERRORS, tags=["items"],
             response_class=Response)
    def get_item_image(name: str, item_id: int) -> Response:
        """The stored pixels of an item of an image collection, scaled up for viewing."""
        col = registry.get(name)
        try:
            pixels = col.images([item_id])[0]
        except InvalidInput:  # the one refusal of images(): none kept (sharded ones too)
            raise ApiError(404, "NoImages", f"collection {col.name} keeps no images") from None
        png = thumbnail_png(pixels)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    # -- the page --------------------------------------------------------------------------

    def page_file(file: str) -> Response:
        path = PAGE_DIR / file
        if not _PAGE_FILE.match(file) or not path.is_file():
            raise ApiError(404, "NotFound", f"no page file {file!r}")
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return page_file("index.html")

    @app.get("/static/{file}", include_in_schema=False)
    def static(file: str) -> Response:
        return page_file(file)

    if _SWAGGER_DIR:  # /docs from the swagger-ui-bundle package: no CDN, works offline
        from fastapi.openapi.docs import get_swagger_ui_html

        @app.get("/docs", include_in_schema=False)
        def docs() -> Response:
            return get_swagger_ui_html(
                openapi_url="/openapi.json", title="latentsearch API",
                swagger_js_url="/docs-static/swagger-ui-bundle.js",
                swagger_css_url="/docs-static/swagger-ui.css",
                swagger_favicon_url="/docs-static/favicon-32x32.png")

        @app.get("/docs-static/{file}", include_in_schema=False)
        def docs_static(file: str) -> Response:
            path = _SWAGGER_DIR / file
            if "/" in file or file.startswith(".") or not path.is_file():
                raise ApiError(404, "NotFound", f"no file {file!r}")
            return FileResponse(path, headers={"Cache-Control": "max-age=86400"})

    app.add_middleware(Guard, token=token or None, max_body=max_body)
    if cors:
        origins = [cors] if isinstance(cors, str) else list(cors)
        app.add_middleware(CORSMiddleware, allow_origins=origins,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    return app
