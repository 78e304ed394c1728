"""Response envelopes of both generations (reference §4)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .util import iso

if TYPE_CHECKING:
    from .pbx import PBX, R

JSON_CT = "application/json; charset=UTF-8"


def _finish(pbx: PBX, payload: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> web.Response:
    # serialise once; meta.hash is a digest of the payload (also sent as the E-Tag header like the
    # PHP app does) and is spliced in as the last member
    raw = json.dumps(payload, separators=(",", ":"))
    digest = hashlib.sha1(raw.encode()).hexdigest()
    body = f'{raw[:-1]},"meta":{{"timestamp":"{iso(pbx.now())}","hash":"{digest}"}}}}'.encode()
    hdrs = {"Access-Control-Allow-Origin": "*", "E-Tag": digest}
    if headers:
        hdrs.update(headers)
    return web.Response(status=status, body=body, content_type="application/json", charset="UTF-8", headers=hdrs)


def v3(pbx: PBX, r: R, headers: dict[str, str] | None = None) -> web.Response:
    payload: dict[str, Any] = {
        "result": r.result,
        "data": r.data,
        "messages": r.messages,
        "function": r.function,
        "processor": r.processor,
        "pid": pbx.pid(),
    }
    if r.http_code is not None:
        payload["httpCode"] = r.http_code
    payload.update(r.extra)
    status = r.http_code if r.http_code is not None else (200 if r.result else 422)
    return _finish(pbx, payload, status, headers)


def raw_v3(pbx: PBX, payload: dict[str, Any], status: int = 200) -> web.Response:
    return _finish(pbx, dict(payload), status)


def v3_error(pbx: PBX, status: int, message: str, function: str = "") -> web.Response:
    payload = {
        "result": False,
        "data": [],
        "messages": {"error": [message]},
        "function": function,
        "processor": "",
        "pid": pbx.pid(),
    }
    return _finish(pbx, payload, status)


def v3_not_found(pbx: PBX, uri: str, message: str) -> web.Response:
    return _finish(pbx, {"success": False, "messages": {"error": [message]}, "data": None}, 404)


def v3_405(pbx: PBX, message: str) -> web.Response:
    return _finish(pbx, {"result": False, "messages": {"error": [message]}}, 405)


def legacy(pbx: PBX, r: R) -> web.Response:
    payload: dict[str, Any] = {
        "jsonapi": {"version": "1.0"},
        "result": r.result,
        "data": r.data,
        "messages": r.messages,
        "function": r.function,
        "processor": r.processor,
        "pid": pbx.pid(),
    }
    return _finish(pbx, payload, 200)


def legacy_errors(pbx: PBX, status: int, message: str) -> web.Response:
    return _finish(pbx, {"jsonapi": {"version": "1.0"}, "errors": [message]}, status)


def plain(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", headers=headers)
