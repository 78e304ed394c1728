"""Pieces shared by both generations' HTTP layers: worker emulation, nginx rate limit, bodies."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aiohttp import web

from . import envelope, texts

if TYPE_CHECKING:
    from .pbx import PBX, R

LOCALHOST_HEADER = "X-Emulator-Localhost"
WORKER_WAIT = {"v3": 30.0, "legacy": 10.0}
RATE_PER_MIN = 180
RATE_BURST = 20


def is_localhost(pbx: PBX, request: web.Request) -> bool:
    """All emulated PBXs listen on 127.0.0.1, so the real "request from localhost" rule would let
    every test in.  The emulator treats a request as local only when it says so explicitly."""
    return request.headers.get(LOCALHOST_HEADER) == "1" or pbx.option("localhost_bypass")


async def read_body(request: web.Request, *, form_only: bool) -> dict[str, Any]:
    """Request data.  Legacy reads POST form fields only (a JSON body is ignored); v3 accepts JSON
    or form bodies and merges query parameters on top."""
    data: dict[str, Any] = {}
    if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.can_read_body:
        ctype = request.content_type or ""
        if ctype == "application/json" and not form_only:
            raw = await request.read()
            try:
                obj = json.loads(raw or b"{}")
            except ValueError:
                obj = {}
            if isinstance(obj, dict):
                data.update(obj)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            post = await request.post()
            for k in post:
                vals = post.getall(k)
                v = vals[-1]
                if k.endswith("[]"):
                    data[k[:-2]] = [str(x) for x in vals]
                else:
                    data[k] = v if isinstance(v, str) else str(v)
        elif ctype == "" and not form_only:
            raw = await request.read()
            if raw:
                data.update(dict(parse_qsl(raw.decode("utf-8", "replace"))))
    if not form_only:
        for k, v in request.query.items():
            data[k] = v
    return data


_NUMERIC_INT = re.compile(r"^[+-]?\d+$")


def sanitize_v3(data: dict[str, Any]) -> dict[str, Any]:
    """v3 BaseController sanitising: strings trimmed; integer-looking strings become integers
    (so a phone '+70000000000' loses its '+')."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, str):
            v = v.strip()
            if _NUMERIC_INT.match(v) and len(v) < 19:
                v = int(v)
        out[k] = v
    return out


def rate_limited(pbx: PBX, request: web.Request) -> bool:
    """nginx Lua limiter (2026 only): per client IP 180/min + 20 burst; then a block of 300 s that
    doubles per repeat offence (cap 3600 s).  Localhost is exempt; so is a PBX whose
    PBXRateLimitEnabled is 0 or a fleet started with --rate-limit off."""
    if pbx.generation != "v3" or not pbx.fleet.rate_limit or is_localhost(pbx, request):
        return False
    if pbx.settings.get("PBXRateLimitEnabled", "1") == "0" or pbx.state.get("options", {}).get("rate_limit") is False:
        return False
    now = pbx.now()
    if pbx.rate_blocked_until > now:
        return True
    hits = pbx.rate_hits
    while hits and hits[0] <= now - 60:
        hits.popleft()
    hits.append(now)
    if len(hits) > RATE_PER_MIN + RATE_BURST:
        pbx.rate_blocked_until = now + min(3600, 300 * 2**pbx.rate_offences)
        pbx.rate_offences += 1
        hits.clear()
        return True
    return False


# fail2ban jail mikopbx-www: (failures, window s, ban s) per generation.  2024 counts every
# unauthenticated REST call (model defaults), 2026 only failed logins.
F2B = {"legacy": (5, 1800.0, 86400.0), "v3": (20, 600.0, 600.0)}


def f2b_exempt(pbx: PBX, request: web.Request) -> bool:
    # 127.0.0.1 is on the jail's whitelist; the emulator only honours that when the request says so
    return is_localhost(pbx, request) or pbx.state.get("options", {}).get("fail2ban") is False


def f2b_record(pbx: PBX, request: web.Request) -> None:
    """Count one 'Wrong password' syslog line against the (single, 127.0.0.1) client."""
    if f2b_exempt(pbx, request):
        return
    maxretry, window, bantime = F2B[pbx.generation]
    now = pbx.now()
    pbx.f2b_failures = [t for t in pbx.f2b_failures if t > now - window]
    pbx.f2b_failures.append(now)
    if len(pbx.f2b_failures) >= maxretry:
        pbx.banned_until = now + bantime
        pbx.f2b_failures = []


def f2b_banned(pbx: PBX, request: web.Request) -> bool:
    return pbx.banned_until > pbx.now() and not f2b_exempt(pbx, request)


def nginx_429() -> web.Response:
    return envelope.plain(429, texts.NGINX_429)


ASYNC_HEADER = "X-Async-Response-Channel-Id"


def _background(pbx: PBX, factory: Callable[[], Coroutine[Any, Any, R]]) -> None:
    """A job nobody waits for (async channel, timed-out client): it still needs a worker."""
    pbx.queued += 1
    task = asyncio.ensure_future(_queued(pbx, factory, pbx.now()))
    pbx.fleet.background.add(task)
    task.add_done_callback(pbx.fleet.background.discard)


async def _queued(pbx: PBX, factory: Callable[[], Coroutine[Any, Any, R]], enqueued: float) -> R | None:
    """Wait for a free worker (the caller counted us in ``pbx.queued``), then run the job.  The
    2026 worker drops a request that waited longer than APIRequestTTL (35 s)."""
    try:
        await pbx.pool.acquire()
    finally:
        pbx.queued -= 1
    try:
        if pbx.generation == "v3" and pbx.now() - enqueued > float(pbx.settings.get("APIRequestTTL") or 35):
            return None
        return await factory()
    finally:
        pbx.pool.release()


async def run_worker(
    pbx: PBX,
    path: str,
    factory: Callable[[], Coroutine[Any, Any, R]],
    respond: Callable[[R], web.Response],
    request: web.Request | None = None,
    action: str = "",
    processor: str = "",
) -> web.Response:
    """Queue -> worker -> answer, with the generation's wait limit and the count faults."""
    fv = pbx.fault_view
    v3 = pbx.generation == "v3"
    channel = request.headers.get(ASYNC_HEADER) if request is not None else None
    if channel:
        # the job runs on; the caller is answered at once (progress would go to the event bus)
        _background(pbx, factory)
        if v3:
            return envelope.raw_v3(pbx, {"success": True, "processor": processor, "action": action})
        from .pbx import R

        return respond(
            R(True, [], {"info": [f"The async job {action} started on channel {channel}"]}, action, processor)
        )
    if fv.consume("queue_full", path):
        if v3:
            return envelope.v3_error(pbx, 503, texts.QUEUE_FULL)
        return envelope.legacy_errors(pbx, 503, texts.QUEUE_FULL)
    if fv.consume("db_locked", path):
        from .pbx import R

        return respond(R(False, [], {"error": [texts.DB_LOCKED]}))
    wait = WORKER_WAIT[pbx.generation]
    wt = fv.consume("worker_timeout", path)
    if wt is not None:
        if wt.get("apply", True):
            _background(pbx, factory)
        await pbx.fleet.clock.sleep(wait)
        return timeout_response(pbx)
    pool = pbx.pool
    if pool.locked():
        # every worker is busy: queue (2026 refuses beyond APIQueueMaxLength waiting requests)
        if v3 and pbx.queued >= int(pbx.settings.get("APIQueueMaxLength") or 50):
            return envelope.v3_error(pbx, 503, texts.QUEUE_FULL)
        pbx.queued += 1
        task: asyncio.Future[R | None] = asyncio.ensure_future(_queued(pbx, factory, pbx.now()))
    else:
        # a free worker: start eagerly -- most actions finish without ever suspending, and then no
        # task, shield or timer is needed (the per-request cost matters at fleet scale)
        await pool.acquire()  # does not suspend: a permit is free
        coro = factory()
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            pool.release()
            return respond(stop.value)
        except BaseException:
            pool.release()
            raise
        task = asyncio.ensure_future(_drive(coro, yielded))
        task.add_done_callback(lambda _t: pool.release())
    try:
        r = await asyncio.wait_for(asyncio.shield(task), pbx.fleet.clock.real(wait) + 0.05)
    except TimeoutError:
        # the worker keeps going (its effect lands later); the client sees the timeout
        pbx.fleet.background.add(task)
        task.add_done_callback(pbx.fleet.background.discard)
        return timeout_response(pbx)
    if r is None:  # dropped as stale (cannot normally happen before the client's own timeout)
        return timeout_response(pbx)
    return respond(r)


async def _drive(coro: Coroutine[Any, Any, R], yielded: Any) -> R:
    """Continue a coroutine that was started by hand and suspended on ``yielded``: wait for that
    future here, then resume the coroutine, which reads the outcome itself (Future.__await__)."""
    while True:
        if yielded is None:
            await asyncio.sleep(0)
        else:
            # what Task.__step does with a yielded future: take over the "blocking" handshake
            yielded._asyncio_future_blocking = False
            try:
                await yielded
            except BaseException:
                if not yielded.done():  # we ourselves were cancelled
                    coro.close()
                    raise
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value


def timeout_response(pbx: PBX) -> web.Response:
    if pbx.generation == "v3":
        return envelope.v3_error(pbx, 400, texts.WORKER_TIMEOUT)
    return envelope.legacy_errors(pbx, 500, texts.LEGACY_500)
