"""ASGI middleware: a request body size limit (413 with an OpenAI error body) and error-response counting."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError
from .metrics import ServingMetrics


class BodyTooLarge(HTTPException):
    """Raised while reading the body; an HTTPException, so the app's handler answers it (413, OpenAI body)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body exceeds {max_bytes} bytes")


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes`: at once from Content-Length, else while the body arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = APIError(413, f"request body exceeds {self.max_bytes} bytes", code="request_too_large")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(APIError(400, "invalid Content-Length header"), scope, receive, send)
                    return
                if declared > self.max_bytes:
                    await _send_error(too_large, scope, receive, send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_error(too_large, scope, receive, send)


async def _send_error(error: APIError, scope: Scope, receive: Receive, send: Send) -> None:
    await error.response()(scope, receive, send)


class ErrorCountMiddleware:
    """Count responses with status >= 400 by status (`redraft_request_errors_total`)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.metrics.errors.inc(status=str(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)
