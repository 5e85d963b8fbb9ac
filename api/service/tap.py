"""The TAP 1.1 endpoints under /tap: sync, async (UWS 1.1), and the VOSI resources."""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from skyledger.schema.errors import DatabaseError, QueryError

from . import vosi
from .http import VOTABLE, base_url, request_params, stream_body, votable_error
from .query import lower_keys, open_result, parse_tap_params
from .uws import ACTIVE, JobRefused, job_xml, jobs_xml, parse_iso

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/tap")
XML = "text/xml"


def _settings(request: Request):
    return request.app.state.settings


# ---------------------------------------------------------------------- sync


@router.api_route("/sync", methods=["GET", "POST"])
async def sync(request: Request) -> Response:
    s = _settings(request)
    try:
        params = await request_params(request)
        req = parse_tap_params(params, default_maxrec=s.tap_default_maxrec, max_rows=s.tap_sync_max_rows)
    except QueryError as err:
        return votable_error(str(err))
    slots: anyio.Semaphore = request.app.state.sync_slots
    acquired = False
    with anyio.move_on_after(s.tap_sync_wait_s):
        await slots.acquire()
        acquired = True
    if not acquired:
        return votable_error(
            f"the service is busy: {s.tap_sync_concurrency} sync queries are running and none ended within "
            f"{s.tap_sync_wait_s:g} s; try again, or submit the query to /tap/async",
            503, {"Retry-After": "10"},
        )
    try:
        datalink = f"{base_url(request)}/datalink"
        result = await anyio.to_thread.run_sync(
            lambda: open_result(s, req, timeout_s=s.tap_sync_timeout_s, datalink_url=datalink)
        )
    except QueryError as err:
        slots.release()
        return votable_error(str(err))
    except DatabaseError as err:
        slots.release()
        return votable_error(f"the database cannot be queried now: {err}", 503)
    except Exception as err:
        slots.release()
        log.exception("sync query failed")
        return votable_error(f"the service failed on this query ({type(err).__name__}); please report it", 500)
    except BaseException:
        slots.release()
        raise

    def close() -> None:
        try:
            result.close()
        finally:
            slots.release()

    return stream_body(result.body, close, result.media_type, deadline_s=sync_delivery_s(s))


def sync_delivery_s(settings) -> float:
    """How long a sync response may take to reach its client, from its first byte: twice
    the statement timeout and half a minute more (150 s by default). A client that stops
    reading loses the rest of the response, and the service its slot back."""
    return 2 * settings.tap_sync_timeout_s + 30.0


# ---------------------------------------------------------------------- async (UWS)


def _jobs(request: Request):
    return request.app.state.jobs


def _job_url(request: Request, job_id: str) -> str:
    return f"{base_url(request)}/tap/async/{job_id}"


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _not_found(job_id: str) -> Response:
    return votable_error(f"there is no job {job_id} (it may have been deleted or destroyed)", 404)


@router.get("/async")
async def job_list(request: Request) -> Response:
    jobs = _jobs(request)
    await anyio.to_thread.run_sync(jobs.sweep)
    p = lower_keys(dict(request.query_params))
    # Each client sees its own jobs only: a job's URL is what gives access to it.
    listed = [j for j in jobs.jobs() if j.owner == _client(request)]
    phases = {v.upper() for k, v in request.query_params.multi_items() if k.lower() == "phase"}
    if phases:
        listed = [j for j in listed if j.phase in phases]
    else:
        listed = [j for j in listed if j.phase != "ARCHIVED"]
    if "after" in p:
        try:
            after = parse_iso(p["after"])
        except QueryError as err:
            return votable_error(str(err), 400)
        listed = [j for j in listed if j.created > after]
    if "last" in p and p["last"].isdigit():
        listed = sorted(listed, key=lambda j: j.created, reverse=True)[: int(p["last"])]
    return Response(jobs_xml(listed, f"{base_url(request)}/tap/async"), media_type=XML)


@router.post("/async")
async def job_create(request: Request) -> Response:
    jobs = _jobs(request)
    try:
        params = await request_params(request)
        owner = _client(request)
        job = await anyio.to_thread.run_sync(jobs.create, params, owner, f"{base_url(request)}/datalink")
    except JobRefused as err:
        return votable_error(str(err), err.status, {"Retry-After": "30"} if err.status in (429, 503) else None)
    except QueryError as err:
        return votable_error(str(err), 400)
    if lower_keys(params).get("phase", "").upper() == "RUN":
        jobs.run(job.id)
    return _see(_job_url(request, job.id))


def _get(request: Request, job_id: str):
    try:
        return _jobs(request).get(job_id)
    except KeyError:
        return None


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _not_yours(request: Request, job_id: str) -> Response | None:
    """Jobs are anonymous: the job URL (a 128-bit random id) lets anyone read a job, but
    only the client address that created it may change, abort or delete it."""
    job = _get(request, job_id)
    if job is None:
        return _not_found(job_id)
    if job.owner != _client(request):
        return votable_error(f"job {job_id} was created by another client; only that client may change or delete it",
                             403)
    return None


@router.get("/async/{job_id}")
async def job_get(request: Request, job_id: str) -> Response:
    jobs = _jobs(request)
    p = lower_keys(dict(request.query_params))
    try:
        if "wait" in p:
            try:
                seconds = float(p["wait"])
            except ValueError:
                return votable_error(f"WAIT={p['wait']!r} is not a number of seconds", 400)
            # UWS 1.1 blocking; -1 means "as long as the server allows" (here 60 s).
            seconds = 60.0 if seconds < 0 else min(seconds, 60.0)
            job = await _wait(jobs, job_id, seconds, p.get("phase", "").upper() or None)
        else:
            job = jobs.get(job_id)
    except KeyError:
        return _not_found(job_id)
    return Response(job_xml(job, _job_url(request, job_id)), media_type=XML)


async def _wait(jobs, job_id: str, seconds: float, phase: str | None):
    """UWS 1.1 blocking: the job once it leaves ``phase`` (by default its phase now) or an
    active phase, or after ``seconds``. Polls the job file from the event loop, so waiting
    clients hold no worker thread."""
    job = jobs.get(job_id)
    start = phase or job.phase
    with anyio.move_on_after(seconds):
        while job.phase == start and job.phase in ACTIVE:
            await anyio.sleep(0.2)
            job = jobs.get(job_id)
    return job


@router.delete("/async/{job_id}")
async def job_delete(request: Request, job_id: str) -> Response:
    if (refusal := _not_yours(request, job_id)) is not None:
        return refusal
    await anyio.to_thread.run_sync(_jobs(request).delete, job_id)
    return _see(f"{base_url(request)}/tap/async")


@router.post("/async/{job_id}")
async def job_post(request: Request, job_id: str) -> Response:
    if (refusal := _not_yours(request, job_id)) is not None:
        return refusal
    try:
        p = lower_keys(await request_params(request))
    except QueryError as err:
        return votable_error(str(err), 400)
    if p.get("action", "").upper() == "DELETE":
        await anyio.to_thread.run_sync(_jobs(request).delete, job_id)
        return _see(f"{base_url(request)}/tap/async")
    return await _update_job(request, job_id, p)


async def _update_job(request: Request, job_id: str, p: dict[str, str]) -> Response:
    jobs = _jobs(request)
    try:
        phase = p.pop("phase", None)
        if "executionduration" in p:
            jobs.set_duration(job_id, p.pop("executionduration"))
        if "destruction" in p:
            jobs.set_destruction(job_id, p.pop("destruction"))
        p.pop("action", None)
        if p:
            jobs.set_params(job_id, p)
        if phase is not None:
            if phase.upper() == "RUN":
                jobs.run(job_id)
            elif phase.upper() == "ABORT":
                await anyio.to_thread.run_sync(jobs.abort, job_id)
            else:
                return votable_error(f"PHASE={phase!r} is not accepted; send PHASE=RUN or PHASE=ABORT", 400)
    except KeyError:
        return _not_found(job_id)
    except JobRefused as err:
        return votable_error(str(err), err.status)
    except QueryError as err:
        return votable_error(str(err), 400)
    return _see(_job_url(request, job_id))


@router.get("/async/{job_id}/phase")
async def job_phase(request: Request, job_id: str) -> Response:
    job = _get(request, job_id)
    return _not_found(job_id) if job is None else PlainTextResponse(job.phase)


@router.post("/async/{job_id}/{attribute}")
async def job_post_attribute(request: Request, job_id: str, attribute: str) -> Response:
    if (refusal := _not_yours(request, job_id)) is not None:
        return refusal
    if attribute not in ("phase", "parameters", "executionduration", "destruction"):
        return votable_error(f"{attribute!r} of a job cannot be changed", 405)
    try:
        p = lower_keys(await request_params(request))
    except QueryError as err:
        return votable_error(str(err), 400)
    if attribute == "phase" and "phase" not in p:
        return votable_error("send PHASE=RUN or PHASE=ABORT", 400)
    if attribute in ("executionduration", "destruction") and attribute not in p:
        return votable_error(f"send {attribute.upper()}=<value>", 400)
    if attribute != "parameters":
        p = {attribute: p[attribute]}
    return await _update_job(request, job_id, p)


@router.get("/async/{job_id}/{attribute}")
async def job_attribute(request: Request, job_id: str, attribute: str) -> Response:
    job = _get(request, job_id)
    if job is None:
        return _not_found(job_id)
    doc = job_xml(job, _job_url(request, job_id))
    if attribute == "parameters":
        return Response(_section(doc, "parameters"), media_type=XML)
    if attribute == "results":
        return Response(_section(doc, "results"), media_type=XML)
    if attribute == "executionduration":
        return PlainTextResponse(str(int(job.duration_s)))
    if attribute == "destruction":
        from .uws import _iso

        return PlainTextResponse(_iso(job.destruction))
    if attribute in ("quote", "owner"):
        return PlainTextResponse("")
    if attribute == "error":
        if job.phase != "ERROR":
            return votable_error(f"job {job_id} is {job.phase}, it has no error", 404)
        return votable_error(job.error or "the job failed")
    return votable_error(f"a job has no {attribute!r}; see its document at {_job_url(request, job_id)}", 404)


def _section(doc: str, tag: str) -> str:
    start = doc.index(f"<uws:{tag}>")
    end = doc.index(f"</uws:{tag}>") + len(f"</uws:{tag}>")
    ns = ('xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" xmlns:xlink="http://www.w3.org/1999/xlink" '
          'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"')
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:{tag} {ns}>{doc[start + len(tag) + 6:end]}\n'


@router.get("/async/{job_id}/results/result")
async def job_result(request: Request, job_id: str) -> Response:
    from fastapi.responses import FileResponse

    job = _get(request, job_id)
    if job is None:
        return _not_found(job_id)
    path = _jobs(request).result_path(job)
    if job.phase != "COMPLETED" or path is None or not path.exists():
        return votable_error(f"job {job_id} is {job.phase} and has no result (yet)", 404)
    return FileResponse(path, media_type=job.result_type or VOTABLE, filename=path.name)


# ---------------------------------------------------------------------- VOSI


@router.get("/capabilities")
async def capabilities(request: Request) -> Response:
    return Response(vosi.capabilities_xml(_settings(request), base_url(request)), media_type=XML)


@router.get("/availability")
async def availability(request: Request) -> Response:
    doc = await anyio.to_thread.run_sync(vosi.availability_xml, _settings(request))
    return Response(doc, media_type=XML)


@router.get("/tables")
async def tables(request: Request) -> Response:
    try:
        rows = await anyio.to_thread.run_sync(vosi.read_tap_schema, _settings(request))
    except (QueryError, DatabaseError) as err:
        return votable_error(f"the table set cannot be read: {err}", 503)
    return Response(vosi.tableset_xml(rows), media_type=XML)


@router.get("/tables/{name}")
async def table(request: Request, name: str) -> Response:
    try:
        rows = await anyio.to_thread.run_sync(vosi.read_tap_schema, _settings(request))
    except (QueryError, DatabaseError) as err:
        return votable_error(f"the table set cannot be read: {err}", 503)
    doc = vosi.table_xml(rows, name)
    if doc is None:
        return votable_error(f"there is no table {name!r}; /tap/tables lists them", 404)
    return Response(doc, media_type=XML)


@router.get("")
async def root(request: Request) -> Response:
    base = base_url(request)
    return PlainTextResponse(
        f"skyledger TAP 1.1 service. Sync: {base}/tap/sync, async: {base}/tap/async, "
        f"capabilities: {base}/tap/capabilities, tables: {base}/tap/tables\n"
    )
