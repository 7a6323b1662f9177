"""The gate every request passes before the app: the token, the body cap, the last resort.

One plain ASGI middleware (no per-request objects beyond two closures, so it costs
microseconds):

* with a token, every request but ``/health`` and the page's static files must carry
  ``Authorization: Bearer <token>``, compared with :func:`hmac.compare_digest` (constant
  time); otherwise 401 before anything else is read;
* request bodies are capped: a declared ``Content-Length`` over the cap is refused at once,
  and the bytes actually streamed are counted while the body is read (413 either way);
* an exception nothing else handled is logged with its traceback and answered as a 500 in
  the one error shape, never with the traceback.
"""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable

from latentsearch.serve.responses import error_body, logger

__all__ = ["Guard", "PUBLIC_PATHS", "PUBLIC_PREFIXES"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: reachable without the token: they hold no data
PUBLIC_PATHS = frozenset({"/health", "/"})
PUBLIC_PREFIXES = ("/static/",)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _send_error(send: Send, status: int, message: str, kind: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = error_body(message, kind)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the client's next
    message (a disconnect)."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Guard:
    """Token check, body cap and the 500 of last resort, around an ASGI app."""

    def __init__(self, app: Callable, *, token: str | None = None, max_body: int = 20_000_000):
        self.app = app
        self.token = token.encode("utf-8") if token else None
        self.max_body = int(max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if self.token is not None and not self._public(scope["path"]):
                problem = self._token_problem(scope)
                if problem:
                    await _send_error(send, 401, problem, "Unauthorized",
                                      [(b"www-authenticate", b"Bearer")])
                    return
            declared = self._content_length(scope)
            if declared is not None and declared > self.max_body:
                await self._too_large(send)
                return
            if scope["method"] in _BODY_METHODS:
                chunks, total = [], 0
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away before sending its body
                    chunk = message.get("body", b"")
                    total += len(chunk)
                    if total > self.max_body:
                        await self._too_large(send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                receive = _replay(b"".join(chunks), receive)
            await self.app(scope, receive, send_tracked)
        except Exception:
            logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # the answer is half sent: let the server drop the connection
            await _send_error(send, 500, "internal error (logged by the server)",
                              "InternalError")

    @staticmethod
    def _public(path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)

    def _token_problem(self, scope: Scope) -> str | None:
        """Why the request's token does not open the door, or None when it does."""
        given = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                given = value
                break
        if given is None:
            return "this server needs a token: send Authorization: Bearer <token>"
        scheme, _, credential = given.partition(b" ")
        if scheme.lower() != b"bearer":
            credential = b""
        # compare_digest on the whole value: its time does not depend on where they differ
        if not hmac.compare_digest(credential.strip(), self.token):
            return "wrong token"
        return None

    @staticmethod
    def _content_length(scope: Scope) -> int | None:
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    async def _too_large(self, send: Send) -> None:
        await _send_error(send, 413, f"the request body is over the server's limit of "
                                     f"{self.max_body:,} bytes (--max-body)", "PayloadTooLarge",
                          [(b"connection", b"close")])
