"""The HTTP query service: ``create_app(settings)`` and the endpoints outside /tap.

- /tap: TAP 1.1 (api/service/tap.py); /scs: Simple Cone Search on catalog.spectra;
  /spectra/{id}: spectrum download; /datalink: DataLink {links}; /: the QA page.

Every statement goes through schema/readpath.py as a catalogue reader; the service
holds no owner connection.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response
from skyledger.schema.errors import DatabaseError, QueryError
from skyledger.schema.settings import Settings

from . import scs, spectra
from .http import VOTABLE, base_url, request_items, stream_body, votable_error
from .tap import router as tap_router
from .tap import sync_delivery_s
from .uws import JobManager

__all__ = ["create_app"]


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.sync_slots = anyio.Semaphore(settings.tap_sync_concurrency)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(app.state.jobs.shutdown)

    app = FastAPI(title="skyledger query service", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.jobs = JobManager(settings)
    app.include_router(tap_router)
    _add_data_routes(app)
    try:
        from . import qa
    except ImportError:  # INTERIM until i23-qa is merged
        qa = None
    if qa is not None:
        app.include_router(qa.router)
    return app


def _add_data_routes(app: FastAPI) -> None:
    @app.get("/scs")
    async def cone(request: Request) -> Response:
        s = request.app.state.settings
        try:
            result = await anyio.to_thread.run_sync(
                scs.cone_query, s, dict(request.query_params), f"{base_url(request)}/datalink"
            )
        except (QueryError, DatabaseError) as err:
            return Response(scs.scs_error(str(err)), media_type=VOTABLE)
        return stream_body(result.body, result.close, result.media_type, deadline_s=sync_delivery_s(s))

    @app.get("/spectra/{spectrum_id}")
    async def spectrum(request: Request, spectrum_id: str, format: str = "fits") -> Response:
        s = request.app.state.settings
        fmt = format.lower()
        if fmt not in spectra.DOWNLOAD_FORMATS:
            return votable_error(f"format={format!r} is not offered; use format=fits or format=votable", 400)
        try:
            sid = spectra.parse_id(spectrum_id)
            spec = await anyio.to_thread.run_sync(spectra.read_spectrum, s, sid)
        except spectra.SpectrumNotFound as err:
            return votable_error(str(err), 404)
        except QueryError as err:
            return votable_error(str(err), 400)
        except DatabaseError as err:
            return votable_error(f"the database cannot be queried now: {err}", 503)
        write = spectra.spectrum_fits if fmt == "fits" else spectra.spectrum_votable
        data = await anyio.to_thread.run_sync(write, sid, spec)
        ext = "fits" if fmt == "fits" else "xml"
        return Response(data, media_type=spectra.DOWNLOAD_FORMATS[fmt],
                        headers={"Content-Disposition": f'attachment; filename="spectrum_{sid}.{ext}"'})

    @app.api_route("/datalink", methods=["GET", "POST"])
    async def datalink(request: Request) -> Response:
        s = request.app.state.settings
        try:
            items = await request_items(request)
        except QueryError as err:
            return Response(spectra.datalink_error(str(err)), status_code=400, media_type=VOTABLE)
        ids = list(dict.fromkeys(v for k, v in items if k.lower() == "id"))
        if not ids:
            return Response(spectra.datalink_error("ID is missing: send ID=<spectrum_id>"), status_code=400,
                            media_type=VOTABLE)
        if len(ids) > spectra.MAX_DATALINK_IDS:
            return Response(spectra.datalink_error(
                f"{len(ids):,} IDs in one request; at most {spectra.MAX_DATALINK_IDS:,} are answered at once: "
                "send them in batches"), status_code=400, media_type=VOTABLE)
        parsed: dict[str, int | None] = {}
        for ident in ids:
            try:
                parsed[ident] = spectra.parse_id(ident)
            except QueryError:
                parsed[ident] = None
        try:
            known = await anyio.to_thread.run_sync(
                spectra.existing_ids, s, [v for v in parsed.values() if v is not None]
            )
        except (QueryError, DatabaseError) as err:
            return Response(spectra.datalink_error(str(err)), status_code=503, media_type=VOTABLE)
        found = {k: (v if v in known else None) for k, v in parsed.items()}
        return Response(spectra.datalink_xml(base_url(request), ids, found),
                        media_type="application/x-votable+xml;content=datalink")

