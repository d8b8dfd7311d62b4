"""The master's HTTP server: routes, thin handlers, start-up and shutdown.

Each handler decodes one message, calls one :class:`MasterService` method and encodes the answer;
authentication and the mapping of errors to answers are the shared middleware's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web

from fluidcache.common import errors
from fluidcache.common.http import health, make_middlewares, read_message, reply, run_app
from fluidcache.common.protocol import (
    BACKUP,
    BLOCK_LOCATIONS,
    DATASET_REPORT,
    FREE,
    HEALTH,
    JOB_CANCEL,
    JOB_LIST,
    JOB_PHASES,
    JOB_STATUS,
    JOB_SUBMIT,
    METRICS,
    NS_LIST,
    NS_LOAD_METADATA,
    NS_LOAD_STATUS,
    NS_LOOKUP,
    NS_SEEN,
    NS_STAT,
    REPORT,
    STATUS,
    STATUS_PAGE,
    STATUS_STATIC,
    WORKER_HEARTBEAT,
    WORKER_REGISTER,
    WORKERS,
    BackupRequest,
    DatasetRequest,
    FreeRequest,
    HeartbeatRequest,
    JobIdRequest,
    JobRequest,
    JobsRequest,
    ListRequest,
    LoadMetadataRequest,
    LoadStatusRequest,
    LocationsRequest,
    LookupRequest,
    RegisterRequest,
    SeenRequest,
    StatRequest,
)
from fluidcache.master.config import MasterConfig
from fluidcache.master.service import MasterService

log = logging.getLogger(__name__)

SERVICE = web.AppKey("master", MasterService)
# Only a registration (every block a worker holds) and a heartbeat (blocks added since the last
# one that got through) may be this large; every other body is held to MAX_MESSAGE.
MAX_BODY = 256 * 1024 * 1024

# The status page: a shell with no data, so it is served without the token (its JSON is not).
STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    STATUS_PAGE: "index.html",
    STATUS_STATIC + "status.js": "status.js",
    STATUS_STATIC + "status.css": "status.css",
}
# The shell loads only its own script and style; the token never leaves the page in a referrer.
SHELL_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
STATUS_JOBS_MAX = 500


async def ns_stat(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(await svc.stat(await read_message(request, StatRequest)))


async def ns_seen(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(await svc.seen(await read_message(request, SeenRequest)))


async def ns_lookup(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(await svc.lookup(await read_message(request, LookupRequest)))


async def ns_list(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(await svc.list_page(await read_message(request, ListRequest)))


async def load_metadata(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(await svc.loads.start(await read_message(request, LoadMetadataRequest)))


async def load_status(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(svc.loads.status((await read_message(request, LoadStatusRequest)).job_id))


async def block_locations(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(svc.locations(await read_message(request, LocationsRequest)))


async def workers(request: web.Request) -> web.Response:
    return reply(request.app[SERVICE].live_workers())


async def register(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(svc.register(await read_message(request, RegisterRequest, MAX_BODY)))


async def heartbeat(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(svc.heartbeat(await read_message(request, HeartbeatRequest, MAX_BODY)))


async def report(request: web.Request) -> web.Response:
    return reply(request.app[SERVICE].report())


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICE].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def dataset_report(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(svc.report((await read_message(request, DatasetRequest)).dataset))


async def backup(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(await svc.backup(await read_message(request, BackupRequest)))


async def job_submit(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(await svc.jobs.submit(await read_message(request, JobRequest)))


async def job_list(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(svc.jobs.list(await read_message(request, JobsRequest)))


async def job_status(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(svc.jobs.status((await read_message(request, JobIdRequest)).job_id))


async def job_cancel(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(svc.jobs.cancel((await read_message(request, JobIdRequest)).job_id))


async def free(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(await svc.free(await read_message(request, FreeRequest)))


def _jobs_query(query: Mapping[str, str]) -> JobsRequest:
    """The status JSON's query (``limit``, ``phase``, both optional) as a jobs request."""
    unknown = sorted(set(query) - {"limit", "phase"})
    if unknown:
        raise errors.InvalidArgument(f"unknown query parameter {unknown[0]!r} (limit, phase)")
    phase = query.get("phase", "")
    if phase and phase not in JOB_PHASES:
        raise errors.InvalidArgument(f"phase {phase!r}: one of {', '.join(JOB_PHASES)}")
    raw = query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= STATUS_JOBS_MAX:
        raise errors.InvalidArgument(f"limit {raw!r}: a whole number from 1 to {STATUS_JOBS_MAX}")
    return JobsRequest(phase=phase, limit=int(raw))


async def status(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    answer = svc.status(_jobs_query(request.query))
    return web.json_response(answer.to_wire(), headers={"Cache-Control": "no-store"})


def _static(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    path = STATIC_DIR / name

    async def serve_file(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers=SHELL_HEADERS)

    return serve_file


def make_app(config: MasterConfig, *, clock: Callable[[], float] | None = None) -> web.Application:
    """The master's application; the service opens on start-up and closes on clean-up.

    ``clock`` replaces both the wall clock (TTLs) and the monotonic one (worker liveness) in tests.
    """
    app = web.Application(
        middlewares=make_middlewares(config.token, public=STATIC_FILES),
        client_max_size=MAX_BODY,
    )

    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        service = MasterService.open(config, clock)
        app[SERVICE] = service
        service.start()
        try:
            yield
        finally:
            await service.close()

    app.cleanup_ctx.append(service_ctx)
    app.router.add_get(HEALTH, health)
    app.router.add_post(NS_STAT, ns_stat)
    app.router.add_post(NS_LOOKUP, ns_lookup)
    app.router.add_post(NS_SEEN, ns_seen)
    app.router.add_post(NS_LIST, ns_list)
    app.router.add_post(NS_LOAD_METADATA, load_metadata)
    app.router.add_post(NS_LOAD_STATUS, load_status)
    app.router.add_post(BLOCK_LOCATIONS, block_locations)
    app.router.add_post(WORKERS, workers)
    app.router.add_post(WORKER_REGISTER, register)
    app.router.add_post(WORKER_HEARTBEAT, heartbeat)
    app.router.add_post(REPORT, report)
    app.router.add_post(DATASET_REPORT, dataset_report)
    app.router.add_post(BACKUP, backup)
    app.router.add_post(JOB_SUBMIT, job_submit)
    app.router.add_post(JOB_LIST, job_list)
    app.router.add_post(JOB_STATUS, job_status)
    app.router.add_post(JOB_CANCEL, job_cancel)
    app.router.add_post(FREE, free)
    app.router.add_get(METRICS, metrics)
    app.router.add_get(STATUS, status)
    for route, name in STATIC_FILES.items():
        app.router.add_get(route, _static(name))
    return app


async def serve(config: MasterConfig, ready: Callable[[str], None] | None = None) -> None:
    """Serve until cancelled, SIGINT or SIGTERM; ``ready`` gets the base URL once listening."""
    config.validate()

    async def started(address: str) -> None:
        log.info("master serving dataset %s on %s", config.dataset, address)
        if ready is not None:
            ready(address)

    await run_app(make_app(config), config.host, config.port, started)
    log.info("master stopped")
