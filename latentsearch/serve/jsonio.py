"""JSON in and out at the speed of the search itself.

A 1,000-query batch is ~32,000 floats in and 10,000 hits out; with the standard library its
JSON would cost more than a fast search. So request bodies are parsed with orjson (the
:class:`JSONRoute` hands FastAPI a request whose ``json()`` uses it, and pydantic then
validates the parsed object), and answers are written by orjson from plain dicts
(:func:`hit_dicts`: building them is 3x faster than letting orjson walk the Hit dataclasses).
Without orjson the standard library does both, more slowly.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Coroutine

import numpy as np
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from latentsearch.types import Hit

try:  # optional: the `serve` extra installs it
    import orjson
except ImportError:  # pragma: no cover - exercised only without the extra
    orjson = None

__all__ = ["dumps", "loads", "FastJSON", "JSONRoute", "hit_dicts"]


def _plain(value: Any) -> Any:
    """What the JSON encoders do not know natively."""
    if isinstance(value, Hit):
        return {"id": value.id, "distance": value.distance, "label": value.label,
                "source": value.source, "text": value.text}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


if orjson is not None:
    def dumps(content: Any) -> bytes:
        """``content`` as JSON bytes (numpy arrays and scalars, and Hits, included)."""
        return orjson.dumps(content, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY)

    loads = orjson.loads  # its JSONDecodeError is json.JSONDecodeError: FastAPI answers 422
else:  # pragma: no cover
    def dumps(content: Any) -> bytes:
        """``content`` as JSON bytes (numpy arrays and scalars, and Hits, included)."""
        return json.dumps(content, default=_plain, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")

    loads = json.loads


def hit_dicts(hits: list[Hit]) -> list[dict[str, Any]]:
    """Hits as the plain dicts of an answer: id, distance, label, source, text."""
    return [{"id": h.id, "distance": h.distance, "label": h.label, "source": h.source,
             "text": h.text} for h in hits]


class FastJSON(Response):
    """A JSON response written by :func:`dumps` (orjson when installed)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


class _FastRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """A route whose request bodies are parsed by :func:`loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_fast(request: Request) -> Response:
            return await handler(_FastRequest(request.scope, request.receive))

        return parse_fast
