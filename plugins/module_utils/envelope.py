# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one parser for MikoPBX REST answers, whatever their shape.

Shapes handled (both generations):

* the normal ``PBXApiResult``: ``result``, ``data``, ``messages``, ``function`` (+ v3 ``httpCode``);
* ``messages`` as an object of lists, an object whose ``info`` is a string (trial success), a plain
  list (v3 getLicenseInfo failure, marketplace failures) or a string; empty ``[]``;
* v3 404 with ``success`` instead of ``result``; legacy ``jsonapi`` wrapper and ``errors`` bodies;
* plain-text nginx answers (429 ``Too many requests``, 403 ``Access denied``), ``PONG``, empty body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.mikopbx.marketplace.plugins.module_utils.licence import extract_licence_code

MESSAGE_KINDS = ("error", "info", "warning", "license")


def empty_messages() -> dict[str, list[str]]:
    return {kind: [] for kind in MESSAGE_KINDS}


@dataclass
class ApiResult:
    """A parsed answer. ``ok`` is the PBX's verdict combined with the HTTP status."""

    ok: bool
    data: Any = None
    messages: dict[str, list[str]] = field(default_factory=empty_messages)
    status: int | None = None
    function: str = ""
    http_code: int | None = None  # v3 ``httpCode`` field, when present
    body_kind: str = "json"  # json | text | empty
    text: str = ""  # the raw body for text answers (already stripped), "" for JSON
    licence_code: int | str | None = None  # 2008 …, or "no_answer"/"dns"
    raw: Any = None  # the decoded JSON document
    method: str | None = None  # filled in by the client: the request that produced this answer
    path: str | None = None
    retry_after: str | None = None  # the Retry-After header, when the PBX sent one

    def error_text(self) -> str:
        """The PBX's own words about a failure: licence and error messages, else the plain text."""
        parts = self.messages.get("license", []) + self.messages.get("error", [])
        if not parts and not self.ok:
            parts = self.messages.get("warning", [])
        if not parts and self.body_kind == "text":
            parts = [self.text]
        return "; ".join(p for p in parts if p)

    def all_text(self) -> str:
        parts: list[str] = []
        for kind in MESSAGE_KINDS:
            parts.extend(self.messages.get(kind, []))
        if self.body_kind == "text":
            parts.append(self.text)
        return "; ".join(p for p in parts if p)


def _strings(value: Any) -> list[str]:
    if value is None or value == "" or value == [] or value == {}:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        out: list[str] = []
        for item in value.values():
            out.extend(_strings(item))
        return out
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            out.extend(_strings(item))
        return out
    return [str(value)]


def normalize_messages(value: Any, ok: bool) -> dict[str, list[str]]:
    """Always ``{"error": [...], "info": [...], "warning": [...], "license": [...]}`` of strings.

    A plain list or string carries no kind: it is an error when the call failed, info otherwise.
    Unknown kinds are folded into ``error`` (failure) or ``info`` (success).
    """
    messages = empty_messages()
    default_kind = "info" if ok else "error"
    if isinstance(value, dict):
        for kind, item in value.items():
            target = kind if kind in MESSAGE_KINDS else default_kind
            messages[target].extend(_strings(item))
    else:
        messages[default_kind].extend(_strings(value))
    return messages


def _status_ok(status: int | None) -> bool:
    return status is None or 200 <= status < 300


def parse_response(status: int | None, body: str | bytes | None, content_type: str | None = None) -> ApiResult:
    """Parse one HTTP answer of the PBX REST API into an :class:`ApiResult`."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    text = (body or "").strip()

    if not text:
        return ApiResult(ok=_status_ok(status), status=status, body_kind="empty")

    document: Any = None
    is_json = False
    if text[:1] in "{[":
        try:
            document = json.loads(text)
            is_json = True
        except ValueError:
            is_json = False

    if not is_json:
        return _parse_text(status, text)

    if not isinstance(document, dict):
        # e.g. a plain list: an answer with no envelope.
        result = ApiResult(ok=_status_ok(status), data=document, status=status, raw=document)
        return result

    return _parse_document(status, document)


def _parse_text(status: int | None, text: str) -> ApiResult:
    ok = _status_ok(status)
    result = ApiResult(ok=ok, data=text if ok else None, status=status, body_kind="text", text=text[:500], raw=text)
    if not ok:
        result.messages["error"].append(_first_line(text))
        result.licence_code = extract_licence_code(text)
    return result


def _first_line(text: str) -> str:
    """A short, human line from a text body (strip HTML tags of nginx error pages)."""
    cleaned = re.sub(r"<[^>]+>", " ", text)
    cleaned = " ".join(cleaned.split())
    return cleaned[:300]


def _parse_document(status: int | None, document: dict[str, Any]) -> ApiResult:
    if "result" in document:
        flag = bool(document.get("result"))
    elif "success" in document:
        flag = bool(document.get("success"))
    elif "errors" in document:
        flag = False
    else:
        flag = _status_ok(status)

    # v3 can answer result:true with a 4xx status (key rejected, coupon then accepted): the
    # status wins, the caller still sees every message.
    ok = flag and _status_ok(status)

    messages = normalize_messages(document.get("messages"), flag)
    if "errors" in document:
        messages["error"].extend(_strings(document.get("errors")))
    if "message" in document and "messages" not in document:
        # legacy admin-cabinet login answers use ``message`` (singular)
        for kind, items in normalize_messages(document.get("message"), flag).items():
            messages[kind].extend(items)

    http_code = document.get("httpCode")
    try:
        http_code = int(http_code) if http_code is not None else None
    except (TypeError, ValueError):
        http_code = None

    result = ApiResult(
        ok=ok,
        data=document.get("data"),
        messages=messages,
        status=status,
        function=str(document.get("function") or ""),
        http_code=http_code,
        raw=document,
    )
    if not ok:
        result.licence_code = extract_licence_code(" ; ".join(messages["license"] + messages["error"]))
    return result
