"""Request and response helpers shared by the service's endpoints."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import parse_qsl

import anyio
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from skyledger.schema.errors import QueryError

from .formats import error_document

__all__ = ["VOTABLE", "base_url", "request_items", "request_params", "stream_body", "votable_error"]

VOTABLE = "application/x-votable+xml"

log = logging.getLogger(__name__)

#: Largest form body read (a query is at most readpath's 100,000 characters).
MAX_FORM_BYTES = 1 << 20


async def request_params(request: Request) -> dict[str, str]:
    """Query-string and form parameters together (form values win); names as sent."""
    return dict(await request_items(request))


async def request_items(request: Request) -> list[tuple[str, str]]:
    """Every (name, value) of the query string and then the form, repeated names kept."""
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > MAX_FORM_BYTES:
                raise QueryError(f"the request body is larger than {MAX_FORM_BYTES:,} bytes")
        if body:
            if ctype == "multipart/form-data":
                raise QueryError(
                    "multipart requests (table uploads) are not supported; send the parameters as "
                    "application/x-www-form-urlencoded"
                )
            try:
                params += parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError:
                raise QueryError("the form body is not UTF-8 text") from None
    return params


def votable_error(message: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A TAP error document (INFO QUERY_STATUS=ERROR). Query errors go out with 200, which
    pyvo parses and raises with the message (it shows only the status line of a 4xx)."""
    return Response(error_document(message), status_code=status, media_type=VOTABLE, headers=headers)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


class _DeadlineResponse(StreamingResponse):
    """A streaming response that must be delivered within ``deadline_s``: a client that
    stops reading (its socket buffers full, every send waiting) would otherwise keep the
    statement, its connection and its sync slot for as long as it keeps the connection open."""

    def __init__(self, content, *, deadline_s: float | None, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.deadline_s = deadline_s

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self._deliver(scope, receive, send)
        except QueryError as err:
            # The statement failed after the response began, in a format with no place for a
            # status (CSV, TSV; VOTable and JSON end with QUERY_STATUS=ERROR instead). Returning
            # without the body's last message makes the server close the connection without
            # the final chunk: the client sees an incomplete transfer, not a short table that
            # looks whole.
            log.warning("a streamed result was aborted part-way: %s", err)

    async def _deliver(self, scope, receive, send) -> None:
        if self.deadline_s is None:
            await super().__call__(scope, receive, send)
            return
        try:
            with anyio.move_on_after(self.deadline_s):
                await super().__call__(scope, receive, send)
        finally:
            # The body's own finally (the statement's close) runs now, not at garbage collection.
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


def stream_body(
    body: Iterator[bytes], close, media_type: str, headers: dict[str, str] | None = None, *,
    deadline_s: float | None = None,
) -> StreamingResponse:
    """Stream a blocking iterator from worker threads; ``close`` runs however the
    response ends (finished, failed, client gone, ``deadline_s`` passed), so no statement
    or connection outlives it."""

    async def chunks():
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(next, body, None)
                if chunk is None:
                    break
                yield chunk
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)

    return _DeadlineResponse(chunks(), deadline_s=deadline_s, media_type=media_type, headers=headers)
