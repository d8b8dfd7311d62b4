"""HTTP plumbing shared by every process: auth and error middleware, msgpack bodies, RPC client."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar

import aiohttp
import msgpack
from aiohttp import web

from fluidcache.common import errors
from fluidcache.common.protocol import HEALTH, JSON, MSGPACK, ErrorReply, Message
from fluidcache.common.tls import client_ssl, server_context

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    err: errors.FluidcacheError, *, as_json: bool = False, status: int = 0
) -> web.Response:
    """The wire form of ``err``: its status (or ``status``) and a ``{code, message}`` body,
    msgpack or JSON."""
    body = ErrorReply(err.code, err.message)
    status = status or err.status
    if as_json:
        return web.json_response(body.to_wire(), status=status)
    return web.Response(status=status, body=body.encode(), content_type=MSGPACK)


def make_middlewares(token: str, public: Collection[str] = ()) -> list[Any]:
    """Bearer-token check and one place that maps exceptions to answers.

    Every path answers 401 without the token (unknown paths too, so routes cannot be probed)
    except health and the exact paths in ``public`` (the status page's shell, which holds no
    data). The token is compared in constant time: both sides are hashed first, so neither its
    content nor its length shows in the timing. A caller that accepts JSON and not msgpack (a
    browser) gets its errors as JSON.
    """
    expected = _digest(f"Bearer {token}".encode())
    open_paths = frozenset((HEALTH, *public))

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        as_json = _wants_json(request)
        try:
            if request.path not in open_paths:
                got = _digest(request.headers.get("Authorization", "").encode("utf-8", "replace"))
                if not hmac.compare_digest(got, expected):
                    raise errors.Unauthorized("missing or wrong cluster token")
            return await handler(request)
        except errors.FluidcacheError as e:
            return error_response(e, as_json=as_json)
        except web.HTTPException as e:
            if e.status >= 400:  # a slow or oversized body keeps its own status
                own = e.status if e.status in (408, 413) else 0
                return error_response(_http_error(e), as_json=as_json, status=own)
            raise
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
            bad = errors.InvalidArgument(f"malformed request: {e}")
            return error_response(bad, as_json=as_json)
        except Exception as e:
            log.exception("unhandled error on %s %s", request.method, request.path)
            internal = errors.FluidcacheError(f"internal error: {e}")
            return error_response(internal, as_json=as_json)

    return [guard]


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return JSON in accept and MSGPACK not in accept


def _http_error(e: web.HTTPException) -> errors.FluidcacheError:
    cls = {404: errors.NotFound, 405: errors.InvalidArgument, 401: errors.Unauthorized}.get(
        e.status, errors.InvalidArgument
    )
    text = e.text or ""
    return cls(e.reason if not text or text.startswith(f"{e.status}:") else text)


MAX_MESSAGE = 16 * 1024 * 1024  # a control message's body, unless its route allows more
BODY_TIMEOUT = 30.0  # seconds a client may take to send a body: slow senders get a 408


async def read_message(request: web.Request, cls: type[M], limit: int = MAX_MESSAGE) -> M:
    """Decode the msgpack body of ``request`` as ``cls`` (InvalidArgument if it is not one).

    A body over ``limit`` bytes is refused (413) before it is read in full, and one that takes
    over :data:`BODY_TIMEOUT` seconds to arrive is refused with a 408.
    """
    body = await read_body(request, limit)
    try:
        return cls.decode(body)  # type: ignore[attr-defined, no-any-return]
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        raise errors.InvalidArgument(f"malformed {cls.__name__}: {e}") from None


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body of ``request``, at most ``limit`` bytes, within :data:`BODY_TIMEOUT`."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            while chunk := await request.content.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
                chunks.append(chunk)
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"body not received within {BODY_TIMEOUT:.0f} s"
        ) from None
    return b"".join(chunks)


def reply(message: Message) -> web.Response:
    return web.Response(body=message.encode(), content_type=MSGPACK)


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def raise_for_error(resp: aiohttp.ClientResponse) -> None:
    """Turn a non-2xx answer from a fluidcache server into its exception."""
    if resp.status < 400:
        return
    body = await resp.read()
    try:
        err = ErrorReply.decode(body)
        raise errors.from_wire(err.code, err.message)
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        raise errors.Unavailable(f"HTTP {resp.status} from {resp.url}: {body[:200]!r}") from None


RETRY_ATTEMPTS = 8
RETRY_FIRST_DELAY = 0.1
RETRY_MAX_DELAY = 2.0


class _Refused(errors.Unavailable):
    """The connection was refused or dropped: the server may be restarting (worth a retry)."""


class RpcClient:
    """Calls one fluidcache server: msgpack in, msgpack out, typed errors back.

    Connection failures and timeouts raise :class:`errors.Unavailable`. With ``retry_for`` a
    call whose connection is refused or dropped (a server restarting) is tried again, at most
    :data:`RETRY_ATTEMPTS` times within that many seconds; only for idempotent calls. ``ssl``
    verifies an HTTPS server (default: the process's TLS settings, see
    :mod:`fluidcache.common.tls`); a server it does not trust is Unavailable, never called.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        session: aiohttp.ClientSession,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        ssl: ssl.SSLContext | bool | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.ssl = client_ssl() if ssl is None else ssl
        self.headers = {
            **(headers or {}),
            "Authorization": f"Bearer {token}",
            "Content-Type": MSGPACK,
        }
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def call(
        self,
        path: str,
        request: Message | None,
        reply_cls: type[M],
        params: Mapping[str, str] | None = None,
        retry_for: float = 0.0,
    ) -> M:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_for
        delay = RETRY_FIRST_DELAY
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return await self._call_once(path, request, reply_cls, params)
            except _Refused as e:
                if attempt == RETRY_ATTEMPTS or loop.time() + delay > deadline:
                    raise errors.Unavailable(e.message) from None
                log.info("%s (attempt %d); retrying in %.1f s", e.message, attempt, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
        raise AssertionError("unreachable")

    async def _call_once(
        self,
        path: str,
        request: Message | None,
        reply_cls: type[M],
        params: Mapping[str, str] | None,
    ) -> M:
        body = request.encode() if request is not None else b""
        url = self.base_url + path
        try:
            async with self.session.post(
                url,
                data=body,
                params=params,
                headers=self.headers,
                timeout=self.timeout,
                ssl=self.ssl,
            ) as resp:
                await raise_for_error(resp)
                data = await resp.read()
        except (aiohttp.ClientConnectionError, ConnectionError) as e:
            if isinstance(e, aiohttp.ServerTimeoutError):
                raise errors.Unavailable(f"{url}: {e.__class__.__name__}: {e}") from None
            raise _Refused(f"{url}: {e.__class__.__name__}: {e}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise errors.Unavailable(f"{url}: {e.__class__.__name__}: {e}") from None
        return reply_cls.decode(data)  # type: ignore[attr-defined, no-any-return]


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_session(ca: str = "", **connector: Any) -> aiohttp.ClientSession:
    """A session for calls to fluidcache servers, verifying HTTPS ones against ``ca`` (else the
    process's CA file, else the system's trust store)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl(ca), **connector))


async def run_app(
    app: web.Application,
    host: str,
    port: int,
    started: Callable[[str], Awaitable[None]],
) -> None:
    """Serve ``app`` on host:port until SIGINT or SIGTERM (or cancellation), then clean up.

    ``started`` gets the base URL (with the real port when ``port`` is 0) once listening: https
    when the process has a TLS certificate (:func:`fluidcache.common.tls.server_context`). A
    port that cannot be bound is a ConfigError naming it.
    """
    tls = server_context()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        try:
            await site.start()
        except OSError as e:
            what = "already in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise errors.ConfigError(f"port: {host}:{port} {what}") from None
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if tls is not None else "http"
        await started(f"{scheme}://{shown}:{runner.addresses[0][1]}")
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
