"""The access log line is written before the answer's last byte leaves, so whoever has the answer
finds its line (the CI once read the log between the two and missed the last request)."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from tokenissue.server.app import _AccessLog


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ab", "more_body": True})
    await send({"type": "http.response.body", "body": b"cd"})


async def _failing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise RuntimeError("the app broke before it answered")


def _call(app: Any) -> tuple[list[int], io.StringIO, list[dict[str, Any]]]:
    stream = io.StringIO()
    lines_when_sent: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        lines_when_sent.append(len(stream.getvalue().splitlines()))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    observed: list[dict[str, Any]] = []
    middleware = _AccessLog(app, stream=stream, observe=observed.append)
    scope = {"type": "http", "method": "POST", "path": "/ocsp", "client": ("127.0.0.1", 5000)}
    if app is _failing_app:
        with pytest.raises(RuntimeError, match="broke"):
            asyncio.run(middleware(scope, receive, send))
    else:
        asyncio.run(middleware(scope, receive, send))
    return lines_when_sent, stream, observed


def test_the_line_is_there_before_the_last_byte_is_sent() -> None:
    lines_when_sent, stream, observed = _call(_app)
    assert lines_when_sent == [0, 0, 1]  # start, first chunk, last chunk
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["status"] == 200 and line["bytes_out"] == 4 and line["path"] == "/ocsp"
    assert observed == [line]


def test_a_request_that_was_never_answered_is_logged_once() -> None:
    lines_when_sent, stream, observed = _call(_failing_app)
    assert lines_when_sent == []
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["status"] == 500 and line["bytes_out"] == 0
    assert len(observed) == 1
