"""A fake HTTP transport at the ``requests`` adapter boundary, and MikoPBX-shaped bodies.

Imported by ``tests/unit/conftest.py`` (which puts this directory on ``sys.path``), so any unit
test can ``from mikopbx_fakes import Reply, v3_ok, ...``.

Only ``requests.adapters.HTTPAdapter.send`` is replaced; the real ``requests.Session`` (cookies,
headers, auth hooks), the collection's client, envelope parser and domain logic all run.

Usage::

    def test_x(fake_http):
        fake_http.add("POST", "/pbxcore/api/v3/auth:login", json=v3_ok({"accessToken": "jwt"}),
                      cookies={"refreshToken": "r1"})
        fake_http.add("GET", "/pbxcore/api/v3/license:getLicenseInfo", json=..., status=200)
        ... run code ...
        assert fake_http.paths() == [...]

Routes are keyed by (METHOD, path) — the URL path without the query — or by a full URL
(``https://host:port/path``) when several PBXs are involved. Several replies for one route are
served in order, the last one repeating. A reply may be a :class:`Reply`, keyword arguments of
``add``, an exception instance (raised like a transport error) or a callable ``fn(request) ->
Reply | Exception``. An unknown route answers 404 with the v3 "Endpoint not found" body and is
recorded, so a test can assert it never happened.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import types
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict

PBX_URL = "https://pbx.example.net"


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)


@dataclass
class SentRequest:
    method: str
    url: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    verify: Any
    timeout: Any

    @property
    def json(self) -> Any:
        return jsonlib.loads(self.body.decode()) if self.body else None

    @property
    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode()) if self.body else {}

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace") if self.body else ""


class FakeHTTP:
    """URL + method → reply map standing in for the network."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Any]] = {}
        self.requests: list[SentRequest] = []

    # -------------------------------------------------------------- setup
    def add(self, method: str, path: str, *replies: Any, **reply_kwargs: Any) -> FakeHTTP:
        """Register replies for a route (appending to earlier ones)."""
        items = list(replies)
        if reply_kwargs:
            items.append(Reply(**reply_kwargs))
        if not items:
            items.append(Reply())
        self.routes.setdefault((method.upper(), path), []).extend(items)
        return self

    def set(self, method: str, path: str, *replies: Any, **reply_kwargs: Any) -> FakeHTTP:
        """Replace the replies of a route."""
        self.routes.pop((method.upper(), path), None)
        return self.add(method, path, *replies, **reply_kwargs)

    # -------------------------------------------------------------- inspection
    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method.upper() and r.path == path)

    def all_text(self) -> str:
        """Everything sent (for secret-leak assertions on the request side are NOT wanted: use
        it to check what was sent)."""
        return "\n".join("%s %s %s %s" % (r.method, r.url, r.headers, r.text) for r in self.requests)

    # -------------------------------------------------------------- transport
    def _pick(self, method: str, url: str, path: str) -> Any:
        parts = urlsplit(url)
        full = "%s://%s%s" % (parts.scheme, parts.netloc, path)
        for key in ((method, full), (method, path), ("*", full), ("*", path)):
            queue = self.routes.get(key)
            if queue:
                return queue.pop(0) if len(queue) > 1 else queue[0]
        return Reply(
            404,
            json={"success": False, "messages": {"error": ["Endpoint not found: %s" % path]}, "data": None},
        )

    def send(
        self,
        adapter: Any,
        request: Any,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        parts = urlsplit(request.url)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        sent = SentRequest(
            method=request.method,
            url=request.url,
            path=parts.path,
            query=parse_qs(parts.query),
            headers=dict(request.headers),
            body=body,
            verify=verify,
            timeout=timeout,
        )
        self.requests.append(sent)

        reply = self._pick(request.method, request.url, parts.path)
        if callable(reply) and not isinstance(reply, Reply):
            reply = reply(sent)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, dict):
            reply = Reply(**reply)
        return _build_response(request, reply)


def _build_response(request: Any, reply: Reply) -> requests.Response:
    response = requests.Response()
    response.status_code = reply.status
    response.reason = http.client.responses.get(reply.status, "")
    if reply.json is not None:
        content = jsonlib.dumps(reply.json).encode()
        headers = {"Content-Type": "application/json; charset=UTF-8"}
    else:
        content = (reply.text or "").encode()
        headers = {"Content-Type": "text/plain"} if reply.text is not None else {}
    headers.update(reply.headers)

    message = http.client.HTTPMessage()
    for name, value in headers.items():
        message[name] = value
    for name, value in reply.cookies.items():
        cookie = "%s=%s; Path=/; HttpOnly" % (name, value)
        message["Set-Cookie"] = cookie
    response.headers = CaseInsensitiveDict(headers)
    response._content = content
    response._content_consumed = True
    response.encoding = "utf-8"
    response.url = request.url
    response.request = request
    # requests reads Set-Cookie from raw._original_response.msg (see requests.cookies).
    response.raw = types.SimpleNamespace(_original_response=types.SimpleNamespace(msg=message), release_conn=None)
    return response


# ------------------------------------------------------------------ MikoPBX-shaped bodies


def v3_ok(data: Any = None, function: str = "", messages: Any = None, **extra: Any) -> dict[str, Any]:
    """A v3 PBXApiResult success envelope."""
    body = {
        "result": True,
        "data": [] if data is None else data,
        "messages": [] if messages is None else messages,
        "function": function,
        "processor": "",
        "pid": 2101,
        "meta": {"timestamp": "2026-04-10T12:00:00+00:00", "hash": "0" * 40},
    }
    body.update(extra)
    return body


def v3_fail(messages: Any, function: str = "", http_code: int | None = None, data: Any = None) -> dict[str, Any]:
    body = v3_ok(data, function, messages)
    body["result"] = False
    if http_code is not None:
        body["httpCode"] = http_code
    return body


def legacy_ok(data: Any = None, function: str = "", messages: Any = None) -> dict[str, Any]:
    """A legacy (2024.1) envelope: ``jsonapi`` wrapper, HTTP always 200."""
    return {
        "jsonapi": {"version": "1.0"},
        "result": True,
        "data": [] if data is None else data,
        "messages": [] if messages is None else messages,
        "function": function,
        "processor": "",
        "pid": 871,
        "meta": {"timestamp": "2024-05-20T10:00:00+03:00", "hash": "0" * 40},
    }


def legacy_fail(messages: Any, function: str = "", data: Any = None) -> dict[str, Any]:
    body = legacy_ok(data, function, messages)
    body["result"] = False
    return body


def legacy_errors(errors: list[str]) -> dict[str, Any]:
    return {"jsonapi": {"version": "1.0"}, "errors": errors, "meta": {"timestamp": "", "hash": ""}}


def license_info_string(
    key: str = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD",
    count: int = 10,
    captured: int = 3,
    extra_products: list[dict[str, Any]] | None = None,
) -> str:
    """``data.licenseInfo`` as the PBX sends it: a JSON *string* of the XML element."""
    products: list[dict[str, Any]] = [
        {
            "@attributes": {"name": "MikoPBX", "expired": "", "trial": "0", "id": "11"},
            "feature": {
                "@attributes": {
                    "name": "MikoPBX base",
                    "id": "33",
                    "count": str(count),
                    "counteach": "1",
                    "captured": str(captured),
                }
            },
        }
    ]
    products.extend(extra_products or [])
    info = {
        "@attributes": {
            "key": key,
            "companyname": "Example LLC",
            "contact": "Jane Doe",
            "email": "admin@example.com",
            "tel": "+10000000000",
        },
        "product": products if len(products) > 1 else products[0],
    }
    return jsonlib.dumps(info)


V3 = "/pbxcore/api/v3/"
LEGACY = "/pbxcore/api/"

__all__ = [
    "FakeHTTP",
    "LEGACY",
    "PBX_URL",
    "Reply",
    "SentRequest",
    "V3",
    "legacy_errors",
    "legacy_fail",
    "legacy_ok",
    "license_info_string",
    "v3_fail",
    "v3_ok",
]
