"""Errors of the HTTP API: every one as ``{"error": "<one line>", "type": "<Name>"}``.

Library errors keep their class name as the type and get the status of their kind (400 for
bad input, 404 for unknown names and ids, 409 for a held lock or an existing collection);
validation and routing errors get the same shape (422, 404, 405); the API's own refusals
are :class:`ApiError` (403 read-only, 404 no images). Never a traceback.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from latentsearch.errors import (
    CollectionExists,
    CollectionLocked,
    CollectionNotFound,
    CorruptCollection,
    LatentSearchError,
    UnknownId,
    UnsupportedFormat,
)
from latentsearch.serve.jsonio import dumps

__all__ = ["ApiError", "error_body", "error_response", "status_of", "install_handlers", "logger"]

logger = logging.getLogger("latentsearch.serve")

#: HTTP status of each library error (the nearest class in the exception's MRO wins)
_STATUS: dict[type, int] = {
    CollectionNotFound: 404,
    UnknownId: 404,
    CollectionLocked: 409,
    CollectionExists: 409,
    CorruptCollection: 500,  # the server's files are broken: not the client's doing
    UnsupportedFormat: 500,
    LatentSearchError: 400,  # InvalidInput, DimensionMismatch, IndexSpecError, EncoderError
}


class ApiError(Exception):
    """An error of the HTTP layer itself (read-only, no images, no such page file)."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def error_body(message: str, kind: str) -> bytes:
    """The one error shape, as bytes: ``{"error": "<one line>", "type": kind}``."""
    line = " ".join(str(message).split()) or kind
    return dumps({"error": line, "type": kind})


def error_response(status: int, message: str, kind: str,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message, kind), status_code=status, headers=headers,
                    media_type="application/json")


def status_of(exc: LatentSearchError) -> int:
    """The HTTP status of a library error."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def _phrase_type(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "HTTPError"


def _validation_message(exc: RequestValidationError, request: Request) -> str:
    errors = exc.errors()
    if not errors:
        return "malformed request"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    msg = str(first.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if first.get("type") == "json_invalid":
        where = f" at character {loc[-1]}" if loc else ""
        msg, loc = f"the body is not valid JSON{where}", []
    elif first.get("type") in ("model_attributes_type", "dict_type") and not loc:
        ctype = request.headers.get("content-type", "")
        if "json" not in ctype:
            msg = "the body must be a JSON object sent with Content-Type: application/json"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"{'.'.join(loc)}: {msg}" if loc else msg) + more


def install_handlers(app: FastAPI) -> None:
    """Map library errors, the API's own, validation and routing errors to the one shape."""

    async def library_error(request: Request, exc: LatentSearchError) -> Response:
        status = status_of(exc)
        if status >= 500:
            logger.error("%s %s: %s: %s", request.method, request.url.path,
                         type(exc).__name__, exc)
        return error_response(status, str(exc), type(exc).__name__)

    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.kind)

    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return error_response(422, _validation_message(exc, request), "ValidationError")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = exc.detail if isinstance(exc.detail, str) else _phrase_type(exc.status_code)
        return error_response(exc.status_code, message, _phrase_type(exc.status_code),
                              headers=getattr(exc, "headers", None))

    app.add_exception_handler(LatentSearchError, library_error)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
