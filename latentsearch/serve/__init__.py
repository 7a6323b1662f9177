"""``latentsearch serve``: the collections under a root over HTTP, and a page to browse them.

``app`` builds the FastAPI app (:func:`create_app`), ``registry`` keeps one Collection per
served name fresh, ``schemas`` holds the request models, ``responses`` the JSON answers and
the error shape, ``guard`` the token / body-cap / last-resort middleware, ``images`` the
uploads and thumbnails; ``page/`` the plain HTML, CSS and JavaScript of the page. Needs the
``serve`` extra (FastAPI, uvicorn, orjson).
"""

from __future__ import annotations

from latentsearch.serve.app import create_app

__all__ = ["create_app"]
