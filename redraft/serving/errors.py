"""OpenAI-style errors: `APIError`, the error body, and the handlers that map every failure to it.

Body: {"error": {"message": str, "type": str, "param": str | None, "code": str | None}}. Validation failures are 400
with `param` naming the offending field (dotted, list indices in brackets: "messages[0].content").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("redraft.serving")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}


class APIError(Exception):
    """A request failure with its HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status in (429, 503) else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid(param: str | None, message: str, code: str = "invalid_value") -> APIError:
    """A 400 naming `param`."""
    return APIError(400, message, param=param, code=code)


def param_name(loc: Sequence[Any]) -> str | None:
    """("body", "messages", 0, "content") -> "messages[0].content"; None for the body itself."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    name = ""
    for p in parts:
        if isinstance(p, int):
            name += f"[{p}]"
        elif isinstance(p, str) and not _is_union_tag(p):
            name += f".{p}" if name else p
    return name or None


def _is_union_tag(part: str) -> bool:
    # pydantic adds the union member it tried to the location ("str", "list[int]", "function-after[...]")
    return part in ("str", "int", "float", "bool", "list", "dict") or "[" in part


def _union_root(loc: Sequence[Any]) -> tuple:
    parts = []
    for p in loc:
        if isinstance(p, str) and _is_union_tag(p):
            break
        parts.append(p)
    return tuple(parts)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors()) or [{"loc": (), "msg": "invalid request", "type": "invalid"}]
    # the first failing field; of its union members' failures, one that is not "wrong type" says the most
    root = _union_root(errors[0].get("loc", ()))
    same = [e for e in errors if _union_root(e.get("loc", ())) == root]
    first = next((e for e in same if not str(e.get("type", "")).endswith("_type")), errors[0])
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return invalid(None, f"request body is not valid JSON: {ctx.get('error', 'decode error')}",
                       "invalid_json").response()
    param = param_name(first.get("loc", ()))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = f"missing required field {param!r}" if param else "request body is required"
    elif first.get("type") == "extra_forbidden":
        message = f"unrecognized request argument {param!r}"
    elif param is None and isinstance(first.get("input"), (bytes, bytearray)):
        message = "request body must be a JSON object sent with Content-Type: application/json"
    elif param is None:
        message = f"request body: {msg}"
    else:
        message = f"{param}: {msg}"
    more = len({_union_root(e.get("loc", ())) for e in errors} - {root})  # other fields, not other union members
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return invalid(param, message, "invalid_type" if first.get("type", "").endswith("_type") else
                   str(first.get("type", "invalid_value"))).response()


def install_error_handlers(app: FastAPI) -> None:
    """Every failure leaves as an OpenAI error body; unexpected exceptions are logged and answered with 500."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        cause = exc.__cause__
        if isinstance(cause, UnicodeDecodeError):
            return invalid(None, "request body is not valid UTF-8", "invalid_json").response()
        if exc.status_code == 400 and isinstance(cause, ValueError):  # e.g. an integer over Python's digit limit
            return invalid(None, f"request body is not valid JSON: {cause}", "invalid_json").response()
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        return APIError(exc.status_code, message, code=code).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error while handling a request")
        return APIError(500, "internal server error", code="internal_error").response()
