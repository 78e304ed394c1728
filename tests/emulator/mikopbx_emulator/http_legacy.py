"""MikoPBX 2024.1 ("legacy") REST API and the admin-cabinet pages both generations serve."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import envelope, texts
from .http_common import f2b_record, is_localhost, read_body, run_worker
from .pbx import R, admin_layout

if TYPE_CHECKING:
    from .pbx import PBX

SESSION_TTL = 3600
LOGIN_WINDOW = 300
LOGIN_MAX = 10
PATH_RE = re.compile(r"^/pbxcore/api/(?P<res>[A-Za-z0-9-]+)/(?P<action>[A-Za-z0-9/]+?)/?$")
LOGIN_PAGE = "/admin-cabinet/session/index"
# pages a login redirect may land on; they only carry the layout (and its globals)
OTHER_PAGES = {
    "/admin-cabinet/extensions/index": "Extensions",
    "/admin-cabinet/licensing/modify": "Licensing",
    "/admin-cabinet/general-settings/modify": "General settings",
}

Action = Callable[["PBX", dict[str, Any]], Awaitable[R]]

# (verb, resource, action) -> (handler, kind)
ROUTES: dict[tuple[str, str, str], tuple[Action, str]] = {}


def _r(verb: str, res: str, action: str, kind: str) -> Callable[[Action], Action]:
    def deco(fn: Action) -> Action:
        ROUTES[(verb, res, action)] = (fn, kind)
        return fn

    return deco


@_r("GET", "license", "getLicenseInfo", "read")
async def _info(p: PBX, d: dict[str, Any]) -> R:
    return await p.get_license_info()


@_r("POST", "license", "processUserRequest", "write")
async def _pur(p: PBX, d: dict[str, Any]) -> R:
    return await p.process_user_request(d)


@_r("GET", "license", "resetKey", "write")
async def _reset(p: PBX, d: dict[str, Any]) -> R:
    return await p.reset_key()


@_r("GET", "license", "getMikoPBXFeatureStatus", "read")
async def _fstatus(p: PBX, d: dict[str, Any]) -> R:
    return await p.feature_status()


@_r("GET", "license", "ping", "read")
async def _ping(p: PBX, d: dict[str, Any]) -> R:
    return await p.ping()


@_r("GET", "license", "sendPBXMetrics", "read")
async def _metrics(p: PBX, d: dict[str, Any]) -> R:
    return await p.send_metrics()


@_r("POST", "license", "captureFeatureForProductId", "write")
async def _capture(p: PBX, d: dict[str, Any]) -> R:
    return await p.capture_feature(d)


@_r("GET", "modules", "core/getAvailableModules", "read")
async def _avail(p: PBX, d: dict[str, Any]) -> R:
    return await p.available_modules()


@_r("POST", "modules", "core/getModuleInfo", "read")  # a POST, but it only reads the marketplace
async def _minfo(p: PBX, d: dict[str, Any]) -> R:
    return await p.module_info(str(d.get("uniqid") or ""))


@_r("POST", "modules", "core/enableModule", "write")
async def _enable(p: PBX, d: dict[str, Any]) -> R:
    return await p.enable_module(str(d.get("uniqid") or ""))


@_r("POST", "modules", "core/disableModule", "write")
async def _disable(p: PBX, d: dict[str, Any]) -> R:
    reason = d.get("reason")
    return await p.disable_module(
        str(d.get("uniqid") or ""),
        None if reason is None else str(reason),
        None if d.get("reasonText") is None else str(d.get("reasonText")),
    )


@_r("GET", "sysinfo", "getInfo", "read")
async def _sysinfo(p: PBX, d: dict[str, Any]) -> R:
    return await p.sysinfo()


@_r("GET", "advice", "getList", "read")
async def _advice(p: PBX, d: dict[str, Any]) -> R:
    return await p.advice()


@_r("GET", "sysinfo", "getHypervisorInfo", "read")
async def _hv(p: PBX, d: dict[str, Any]) -> R:
    return await p.hypervisor()


@_r("GET", "sysinfo", "getDMIInfo", "read")
async def _dmi(p: PBX, d: dict[str, Any]) -> R:
    return await p.dmi()


@_r("GET", "sysinfo", "getExternalIpInfo", "read")
async def _ip(p: PBX, d: dict[str, Any]) -> R:
    return await p.external_ip()


def _unknown_sysinfo(action: str) -> Action:
    async def fn(p: PBX, d: dict[str, Any]) -> R:
        proc = "MikoPBX\\PBXCoreREST\\Lib\\SysinfoManagementProcessor"
        return R(False, [], {"error": [texts.unknown_action(action, proc)]}, action, proc + "::callBack")

    return fn


def session_of(pbx: PBX, request: web.Request) -> dict[str, Any] | None:
    sid = request.cookies.get("PHPSESSID")
    if not sid:
        return None
    s = pbx.sessions.get(sid)
    if s is None:
        return None
    now = pbx.now()
    if s["expires"] < now:
        pbx.sessions.pop(sid, None)
        return None
    s["expires"] = now + SESSION_TTL  # PHP sessions slide with activity
    return s


async def handle_api(pbx: PBX, request: web.Request, path: str) -> tuple[web.Response, str]:
    verb_kind = "read" if request.method == "GET" else "write"
    m = PATH_RE.match(path)
    entry = ROUTES.get((request.method, m.group("res"), m.group("action"))) if m else None
    if entry is None and m and request.method == "GET" and m.group("res") == "sysinfo" and "/" not in m.group("action"):
        # the sysinfo GET controller forwards any action name to its processor
        entry = (_unknown_sysinfo(m.group("action")), "read")
    if path.startswith("/pbxcore/api/v3/auth:"):
        # A client probing for the 2026.1 login on a 2024.1 PBX: an authentication attempt that
        # changes nothing, so the request log must not count it as a write.
        return envelope.legacy_errors(pbx, 404, texts.LEGACY_404), "auth"
    if path.startswith("/pbxcore/api/v3/") or entry is None:
        return envelope.legacy_errors(pbx, 404, texts.LEGACY_404), verb_kind
    fn, kind = entry
    if session_of(pbx, request) is None and not is_localhost(pbx, request):
        f2b_record(pbx, request)  # logged as "web_auth ... Wrong password" -> the fail2ban jail counts it
        return envelope.legacy_errors(pbx, 401, texts.NOT_AUTHENTICATED), kind
    data = await read_body(request, form_only=True)

    async def factory() -> R:
        return await fn(pbx, data)

    action = m.group("action").rsplit("/", 1)[-1] if m else ""
    processor = f"MikoPBX\\PBXCoreREST\\Lib\\{m.group('res').capitalize() if m else ''}ManagementProcessor::callBack"
    return await run_worker(pbx, path, factory, lambda r: envelope.legacy(pbx, r), request, action, processor), kind


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _is_xhr(request: web.Request) -> bool:
    return request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest"


async def handle_admin(pbx: PBX, request: web.Request, path: str) -> tuple[web.Response, str]:
    """Admin-cabinet pages.  Legacy authorises them with the PHP session; 2026 also accepts an admin
    JWT in ``Authorization: Bearer`` (validated, as HEAD does)."""
    xhr = _is_xhr(request)
    p = path.rstrip("/")
    if pbx.generation == "legacy" and p == "/admin-cabinet/session/start" and request.method == "POST":
        return await _session_start(pbx, request, xhr), "auth"
    if pbx.generation == "legacy" and p == "/admin-cabinet/session/end":
        sid = request.cookies.get("PHPSESSID")
        if sid:
            pbx.sessions.pop(sid, None)
        return _redirect(LOGIN_PAGE), "auth"
    if p in ("/admin-cabinet/session/index", "/admin-cabinet/session", "/admin-cabinet"):
        page = admin_layout(pbx, "Login", '<form id="login-form" method="post"></form>', logged_in=False)
        return web.Response(text=page, content_type="text/html"), "read"
    if p in ("/admin-cabinet/pbx-extension-modules/index", "/admin-cabinet/pbx-extension-modules"):
        if request.method != "GET":
            return web.Response(status=404, text="Not found", content_type="text/html"), "write"
        if not _admin_authorised(pbx, request):
            if xhr:
                return envelope.plain(403, texts.NOT_AUTHORIZED_XHR), "read"
            return _redirect(LOGIN_PAGE), "read"
        return web.Response(text=pbx.admin_modules_page(), content_type="text/html"), "read"
    kind = "read" if request.method == "GET" else "write"
    if p in OTHER_PAGES and request.method == "GET":
        if not _admin_authorised(pbx, request):
            if xhr:
                return envelope.plain(403, texts.NOT_AUTHORIZED_XHR), kind
            return _redirect(LOGIN_PAGE), kind
        page = admin_layout(pbx, OTHER_PAGES[p], f"<h1>{OTHER_PAGES[p]}</h1>", logged_in=True)
        return web.Response(text=page, content_type="text/html"), kind
    return web.Response(
        status=404, text="<html><body><h1>404 Not Found</h1></body></html>", content_type="text/html"
    ), kind


def _admin_authorised(pbx: PBX, request: web.Request) -> bool:
    if pbx.generation == "legacy":
        return session_of(pbx, request) is not None
    from .http_v3 import decode_jwt

    header = request.headers.get("Authorization", "")
    return header.startswith("Bearer ") and decode_jwt(pbx, header[7:].strip()) is not None


async def _session_start(pbx: PBX, request: web.Request, xhr: bool) -> web.Response:
    now = pbx.now()
    pbx.legacy_login_attempts = [t for t in pbx.legacy_login_attempts if t > now - LOGIN_WINDOW]
    data = await read_body(request, form_only=True)
    # every POST counts, successful ones included (reference §3.2)
    pbx.legacy_login_attempts.append(now)
    left = LOGIN_MAX - len(pbx.legacy_login_attempts)
    ok = False
    if left < 0:
        msg = texts.LEGACY_TOO_MANY
    elif (
        str(data.get("login") or "") == pbx.settings["WebAdminLogin"]
        and str(data.get("password") or "") == pbx.state["password"]
    ):
        ok = True
        msg = ""
    else:
        msg = texts.legacy_login_failed(max(left, 0))
    if not ok:
        if xhr:
            return web.json_response({"success": False, "reload": False, "message": {"error": [msg]}})
        return _redirect(LOGIN_PAGE)
    sid = pbx.fleet.ids.hex(26)
    pbx.sessions[sid] = {"expires": now + SESSION_TTL, "login": str(data.get("login"))}
    if xhr:
        resp: web.Response = web.json_response(
            {"success": True, "reload": "/admin-cabinet/extensions/index", "message": []}
        )
    else:
        resp = _redirect("/admin-cabinet/extensions/index")
    resp.headers.add("Set-Cookie", f"PHPSESSID={sid}; path=/; HttpOnly")
    if str(data.get("rememberMeCheckBox") or "") == "on":
        # remember-me: an extra 30-day random_token cookie (the session itself still lasts 3600 s)
        token = pbx.fleet.ids.hex(64)
        pbx.remember_tokens[token] = now + 30 * 86400
        expires = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30 * 86400))
        resp.headers.add("Set-Cookie", f"random_token={token}; expires={expires}; path=/; HttpOnly")
    return resp
