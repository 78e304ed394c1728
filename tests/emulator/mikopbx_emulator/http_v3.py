"""MikoPBX 2026.1 ("v3") REST API: routing, authentication and handlers."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from aiohttp import web

from . import envelope, texts
from .http_common import f2b_record, is_localhost, read_body, run_worker, sanitize_v3
from .pbx import NS, P_LIC, P_MOD, R, is_select, parse_probe, proc

if TYPE_CHECKING:
    from .pbx import PBX

PREFIX = "/pbxcore/api/v3/"
PATH_RE = re.compile(
    r"^/pbxcore/api/v3/(?P<res>[a-z0-9-]+)(?:/(?P<id>[^/:]+))?"
    r"(?::(?P<method>[A-Za-z][A-Za-z0-9]*))?/?$"
)
ACCESS_TTL = 900
LEEWAY = 600
REFRESH_TTL = 30 * 86400
LOGIN_WINDOW = 300
LOGIN_MAX_FAILURES = 10
REFRESH_MAX = 100
DENY_PREFIXES = ("/pbxcore/api/nchan", "/pbxcore/api/user-page-tracker")
ID_SEGMENT = re.compile(
    r"^(\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[A-Z]+-[A-Z0-9-]*\d[A-Z0-9-]*)$"
)

Handler = Callable[["Ctx"], Awaitable[web.Response]]


@dataclass
class Ctx:
    pbx: PBX
    request: web.Request
    path: str
    res: str
    id: str | None
    method: str | None
    data: dict[str, Any]
    auth: dict[str, Any]


@dataclass
class Route:
    verbs: tuple[str, ...]
    handler: Handler
    kind: str = "read"
    public: bool = False
    worker: bool = True


ROUTES: dict[tuple[str, str | None, bool], dict[str, Route]] = {}
RESOURCES: dict[str, str] = {}  # resource -> processor class for "Unknown action" answers


def route(
    res: str,
    method: str | None,
    verbs: str,
    *,
    kind: str | None = None,
    public: bool = False,
    with_id: bool = False,
    worker: bool = True,
) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        vs = tuple(verbs.split(","))
        k = kind or ("read" if vs == ("GET",) else "write")
        for v in vs:
            ROUTES.setdefault((res, method, with_id), {})[v] = Route(vs, fn, k, public, worker)
        return fn

    return deco


def respond(pbx: PBX) -> Callable[[R], web.Response]:
    return lambda r: envelope.v3(pbx, r)


def base_path(path: str) -> str:
    """API-key permission base path: strip /pbxcore, strip ':method', drop a trailing id."""
    p = path.removeprefix("/pbxcore")
    p = p.rstrip("/")
    if ":" in p.rsplit("/", 1)[-1]:
        p = p[: p.rfind(":")]
    segs = p.split("/")
    if len(segs) > 4 and ID_SEGMENT.match(segs[-1]):
        segs = segs[:-1]
    return "/".join(segs)


def key_allows(rec: dict[str, Any], verb: str, path: str) -> bool:
    if rec.get("full_permissions"):
        return not any(path.startswith(p) for p in DENY_PREFIXES)
    perm = (rec.get("allowed_paths") or {}).get(base_path(path))
    if verb == "GET":
        return perm in ("read", "write")
    return perm == "write"


def find_api_key(pbx: PBX, token: str) -> dict[str, Any] | None:
    cache = pbx.api_key_cache
    if token in cache:
        return cache[token]
    found = None
    for rec in pbx.state["api_keys"]:
        if hmac.compare_digest(rec["key"], token):
            found = rec
            break
    if len(cache) > 1000:
        cache.clear()
    cache[token] = found
    return found


def decode_jwt(pbx: PBX, token: str) -> dict[str, Any] | None:
    if token.count(".") != 2:
        return None
    try:
        payload = jwt.decode(
            token,
            pbx.settings["JWTSecret"],
            algorithms=["HS256"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        return None
    now = pbx.now()
    try:
        if float(payload["exp"]) + LEEWAY < now or float(payload["nbf"]) - LEEWAY > now:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return payload


def make_jwt(pbx: PBX, login: str, language: str = "en") -> str:
    now = int(pbx.now())
    payload = {"userId": login, "role": "admins", "language": language, "iat": now, "exp": now + ACCESS_TTL, "nbf": now}
    return jwt.encode(payload, pbx.settings["JWTSecret"], algorithm="HS256", headers={"typ": "JWT"})


def authenticate(pbx: PBX, request: web.Request, path: str, public: bool) -> tuple[bool, dict[str, Any]]:
    header = request.headers.get("Authorization")
    if public:
        return True, {"type": "public"}
    if header is not None:
        if not header.startswith("Bearer "):
            return False, {}
        token = header[7:].strip()
        payload = decode_jwt(pbx, token)
        if payload is not None:
            return True, {"type": "jwt", "role": payload.get("role"), "user": payload.get("userId")}
        rec = find_api_key(pbx, token)
        if rec is not None and key_allows(rec, request.method, path):
            rec["last_used_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(pbx.now()))
            return True, {"type": "api_key", "id": rec["id"]}
        return False, {}
    if is_localhost(pbx, request):
        return True, {"type": "localhost"}
    return False, {}


async def handle(pbx: PBX, request: web.Request, path: str) -> tuple[web.Response, str]:
    m = PATH_RE.match(path)
    if not m:
        return envelope.v3_not_found(pbx, path, texts.endpoint_not_found(path)), _kind_by_verb(request)
    res, rid, method = m.group("res"), m.group("id"), m.group("method")
    if res not in RESOURCES:
        return envelope.v3_not_found(pbx, path, texts.endpoint_not_found(path)), _kind_by_verb(request)
    by_verb = ROUTES.get((res, method, rid is not None))
    rt = None
    if by_verb:
        rt = by_verb.get(request.method) or next(iter(by_verb.values()))
    public = bool(rt and rt.public)
    ok, auth = authenticate(pbx, request, path, public)
    kind = rt.kind if rt else _kind_by_verb(request)
    if not ok:
        return envelope.v3_error(pbx, 401, texts.NOT_AUTHENTICATED), kind
    if auth.get("type") == "jwt" and auth.get("role") != "admins" and not is_localhost(pbx, request):
        # Roles other than admins come from the ModuleUsersUI module, whose ACL is not emulated:
        # such a role is granted nothing, and the ACL's refusal is a 403, not a 401.
        return envelope.v3_error(pbx, 403, texts.ACCESS_DENIED), kind
    if rt is None:
        if method is None:
            action = {
                "GET": "getRecord" if rid else "getList",
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
            }.get(request.method, "getList")
            r = R(
                False,
                [],
                {"error": [texts.unknown_action(action, RESOURCES[res])]},
                action,
                RESOURCES[res] + "::callBack",
            )
            return envelope.v3(pbx, r), kind
        return envelope.v3_405(pbx, texts.method_not_allowed(method, request.method)), kind
    if request.method not in rt.verbs:
        name = method or res
        return envelope.v3_405(pbx, texts.method_not_allowed(name, request.method)), _kind_by_verb(request)
    data = sanitize_v3(await read_body(request, form_only=False))
    ctx = Ctx(pbx, request, path, res, rid, method, data, auth)
    if res == "system" and method == "executeSqlRequest":
        kind = "read" if is_select(str(data.get("query") or "")) else "write"
    elif res == "system" and method == "executeBashCommand":
        kind = "read" if parse_probe(str(data.get("command") or "")) else "write"
    if not rt.worker:
        return await rt.handler(ctx), kind

    async def factory() -> R:
        return await _call(rt.handler, ctx)

    return await run_worker(
        pbx, path, factory, respond(pbx), request, method or res, RESOURCES[res] + "::callBack"
    ), kind


async def _call(handler: Handler, ctx: Ctx) -> Any:
    return await handler(ctx)


def _kind_by_verb(request: web.Request) -> str:
    return "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"


# ---------------------------------------------------------------- resources
for _res, _proc in {
    "auth": NS + "Auth\\AuthManagementProcessor",
    "system": NS + "SystemManagementProcessor",
    "sysinfo": NS + "SysinfoManagementProcessor",
    "network": NS + "NetworkManagementProcessor",
    "license": P_LIC,
    "modules": P_MOD,
    "api-keys": NS + "ApiKeysManagementProcessor",
    "general-settings": NS + "GeneralSettingsManagementProcessor",
    "advice": NS + "AdviceManagementProcessor",
}.items():
    RESOURCES[_res] = _proc


def _cookie(value: str, *, remember: bool, pbx: PBX, clear: bool = False) -> str:
    parts = [f"refreshToken={value}"]
    if clear:
        parts.append("expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0")
    elif remember:
        parts.append("expires=" + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(pbx.now() + REFRESH_TTL)))
    parts += ["path=/", "secure", "HttpOnly", "SameSite=Strict"]
    return "; ".join(parts)


@route("auth", "login", "POST", kind="auth", public=True, worker=False)
async def auth_login(ctx: Ctx) -> web.Response:
    pbx = ctx.pbx
    fn, pr = "login", proc("Auth\\LoginAction")

    async def work() -> R:
        now = pbx.now()
        pbx.login_failures = [t for t in pbx.login_failures if t > now - LOGIN_WINDOW]
        # 2026.1.223 quirk: the limiter bucket is the literal "unknown" -> one bucket for everybody
        if len(pbx.login_failures) >= LOGIN_MAX_FAILURES:
            wait = int(pbx.login_failures[0] + LOGIN_WINDOW - now) + 1
            return R(False, [], {"error": [texts.auth_too_many(wait)]}, fn, pr, 429)
        login = ctx.data.get("login")
        password = ctx.data.get("password")
        token = ctx.data.get("sessionToken")
        if not ((login not in (None, "") and password not in (None, "")) or token):
            return R(False, [], {"error": [texts.AUTH_LOGIN_PASSWORD_REQUIRED]}, fn, pr, 400)
        if token or str(login) != pbx.settings["WebAdminLogin"] or str(password) != pbx.state["password"]:
            pbx.login_failures.append(now)
            f2b_record(pbx, ctx.request)  # 2026: failed logins feed the fail2ban jail
            return R(False, [], {"error": [texts.AUTH_WRONG_LOGIN_PASSWORD]}, fn, pr, 401)
        remember = ctx.data.get("rememberMe") is True  # strict: only JSON true
        refresh = pbx.fleet.ids.hex(64)
        pbx.refresh_tokens[refresh] = {"expires": now + REFRESH_TTL, "login": str(login), "remember": remember}
        access = make_jwt(pbx, str(login), str(ctx.data.get("language") or "en"))
        r = R(
            True,
            {"accessToken": access, "tokenType": "Bearer", "expiresIn": ACCESS_TTL, "login": str(login)},
            [],
            fn,
            pr,
        )
        r.extra["__cookie"] = _cookie(refresh, remember=remember, pbx=pbx)
        return r

    return await run_worker(pbx, ctx.path, work, lambda r: _with_cookie(pbx, r))


def _with_cookie(pbx: PBX, r: R) -> web.Response:
    cookie = r.extra.pop("__cookie", None)
    resp = envelope.v3(pbx, r)
    if cookie:
        resp.headers.add("Set-Cookie", cookie)
    return resp


@route("auth", "refresh", "POST", kind="auth", public=True, worker=False)
async def auth_refresh(ctx: Ctx) -> web.Response:
    pbx = ctx.pbx
    fn, pr = "refresh", proc("Auth\\RefreshAction")

    async def work() -> R:
        now = pbx.now()
        pbx.refresh_hits = [t for t in pbx.refresh_hits if t > now - LOGIN_WINDOW]
        if len(pbx.refresh_hits) >= REFRESH_MAX:
            return R(False, [], {"error": [texts.auth_too_many(LOGIN_WINDOW)]}, fn, pr, 429)
        pbx.refresh_hits.append(now)
        value = ctx.request.cookies.get("refreshToken")
        if not value:
            return R(False, [], {"error": [texts.AUTH_REFRESH_MISSING]}, fn, pr, 401)
        rec = pbx.refresh_tokens.get(value)
        if rec is None or rec["expires"] < now:
            return R(False, [], {"error": [texts.AUTH_REFRESH_EXPIRED]}, fn, pr, 401)
        rec["last_used"] = now  # not rotated
        return R(
            True,
            {
                "accessToken": make_jwt(pbx, rec["login"]),
                "tokenType": "Bearer",
                "expiresIn": ACCESS_TTL,
                "homePage": "/admin-cabinet/extensions/index",
            },
            [],
            fn,
            pr,
        )

    return await run_worker(pbx, ctx.path, work, respond(pbx))


@route("auth", "logout", "POST", kind="auth", worker=False)
async def auth_logout(ctx: Ctx) -> web.Response:
    pbx = ctx.pbx

    async def work() -> R:
        value = ctx.request.cookies.get("refreshToken")
        if value:
            pbx.refresh_tokens.pop(value, None)
        r = R(True, {"message": texts.AUTH_LOGOUT_OK}, [], "logout", proc("Auth\\LogoutAction"))
        r.extra["__cookie"] = _cookie("deleted", remember=False, pbx=pbx, clear=True)
        return r

    return await run_worker(pbx, ctx.path, work, lambda r: _with_cookie(pbx, r))


@route("auth", "validateToken", "GET", kind="read", public=True, worker=False)
async def auth_validate(ctx: Ctx) -> web.Response:
    if not is_localhost(ctx.pbx, ctx.request):
        return web.json_response({"error": "Access denied: internal endpoint"}, status=403)
    token = str(ctx.request.query.get("token") or "")
    ok = decode_jwt(ctx.pbx, token) is not None
    return web.json_response({"valid": ok}, status=200 if ok else 401)


@route("system", "ping", "GET", public=True)
async def system_ping(ctx: Ctx) -> R:
    return R(True, [], [], "ping", proc("System\\PingAction"))


@route("system", "checkAuth", "GET")
async def system_check_auth(ctx: Ctx) -> R:
    return R(True, [], [], "checkAuth", proc("System\\CheckAuthAction"))


@route("system", "executeSqlRequest", "POST", kind="read")
async def system_sql(ctx: Ctx) -> R:
    return await ctx.pbx.execute_sql(ctx.data)


@route("system", "executeBashCommand", "POST", kind="read")
async def system_bash(ctx: Ctx) -> R:
    return await ctx.pbx.execute_bash(ctx.data)


@route("sysinfo", "getInfo", "GET")
async def sysinfo_get(ctx: Ctx) -> R:
    return await ctx.pbx.sysinfo()


@route("sysinfo", "getHypervisorInfo", "GET")
async def sysinfo_hv(ctx: Ctx) -> R:
    return await ctx.pbx.hypervisor()


@route("sysinfo", "getDMIInfo", "GET")
async def sysinfo_dmi(ctx: Ctx) -> R:
    return await ctx.pbx.dmi()


@route("sysinfo", "getExternalIpInfo", "GET")
async def sysinfo_ip(ctx: Ctx) -> R:
    return await ctx.pbx.external_ip()


@route("network", "getConfig", "GET")
async def network_get(ctx: Ctx) -> R:
    return await ctx.pbx.network_config()


@route("license", "getLicenseInfo", "GET")
async def lic_info(ctx: Ctx) -> R:
    return await ctx.pbx.get_license_info()


@route("license", "processUserRequest", "POST")
async def lic_process(ctx: Ctx) -> R:
    return await ctx.pbx.process_user_request(ctx.data)


@route("license", "resetKey", "GET", kind="write")
async def lic_reset(ctx: Ctx) -> R:
    return await ctx.pbx.reset_key()


@route("license", "ping", "GET")
async def lic_ping(ctx: Ctx) -> R:
    return await ctx.pbx.ping()


@route("license", "sendPBXMetrics", "GET")
async def lic_metrics(ctx: Ctx) -> R:
    return await ctx.pbx.send_metrics()


@route("license", "captureFeatureForProductId", "POST")
async def lic_capture(ctx: Ctx) -> R:
    return await ctx.pbx.capture_feature(ctx.data)


@route("modules", "getDefault", "GET")
async def mod_default(ctx: Ctx) -> R:
    # the generic CRUD routes exist for modules, but its processor implements none of them
    return R(False, [], {"error": [texts.unknown_action("getDefault", P_MOD)]}, "getDefault", P_MOD + "::callBack")


@route("modules", "getAvailableModules", "GET")
async def mod_available(ctx: Ctx) -> R:
    return await ctx.pbx.available_modules()


@route("modules", "getModuleInfo", "GET", with_id=True)
async def mod_info(ctx: Ctx) -> R:
    return await ctx.pbx.module_info(str(ctx.id))


@route("modules", "enable", "POST", with_id=True)
async def mod_enable(ctx: Ctx) -> R:
    return await ctx.pbx.enable_module(str(ctx.id))


@route("modules", "disable", "POST", with_id=True)
async def mod_disable(ctx: Ctx) -> R:
    reason = ctx.data.get("reason")
    text = ctx.data.get("reasonText")
    return await ctx.pbx.disable_module(
        str(ctx.id), "" if reason is None else str(reason), None if text is None else str(text)
    )


# ---------------------------------------------------------------- api keys
P_KEYS = "ApiKeys\\"
PATH_OK = re.compile(r"^/api/v[0-9]+/[a-z0-9-]+(/[a-z0-9-]+)*$")


def _key_record(rec: dict[str, Any]) -> dict[str, Any]:
    k = rec["key"]
    paths = rec.get("allowed_paths") or {}
    return {
        "id": str(rec["id"]),
        "description": rec["description"],
        "created_at": rec.get("created_at", ""),
        "last_used_at": rec.get("last_used_at", ""),
        "networkfilterid": rec.get("networkfilterid", "none"),
        "key_display": f"{k[:5]}...{k[-5:]}",
        "full_permissions": bool(rec.get("full_permissions")),
        "allowed_paths": paths or {},
        "has_key": True,
        "allowed_paths_count": len(paths),
        "networkfilter_represent": "",
        "has_network_filter": False,
        "represent": rec["description"],
    }


@route("api-keys", "generateKey", "POST")
async def keys_generate(ctx: Ctx) -> R:
    return R(True, {"key": ctx.pbx.fleet.ids.hex(64)}, [], "generateKey", proc(P_KEYS + "GenerateKeyAction"))


@route("api-keys", None, "GET")
async def keys_list(ctx: Ctx) -> R:
    rows = [_key_record(k) for k in ctx.pbx.state["api_keys"]]
    search = str(ctx.data.get("search") or "").lower()
    if search:
        rows = [r for r in rows if search in r["description"].lower()]
    order = ctx.data.get("order")
    if order in ("description", "id"):
        rows.sort(
            key=lambda r: int(r["id"]) if order == "id" else r["description"],
            reverse=str(ctx.data.get("orderWay") or "ASC").upper() == "DESC",
        )
    # pagination only when limit or offset is given (reference §9); server cap 1000
    if "limit" in ctx.data or "offset" in ctx.data:
        try:
            limit = min(1000, max(1, int(ctx.data.get("limit") or 20)))
            offset = max(0, int(ctx.data.get("offset") or 0))
        except (TypeError, ValueError):
            limit, offset = 20, 0
        rows = rows[offset : offset + limit]
    return R(True, rows, [], "getList", proc(P_KEYS + "GetListAction"))


@route("api-keys", "getDefault", "GET")
async def keys_default(ctx: Ctx) -> R:
    data = {
        "id": "",
        "description": "",
        "created_at": "",
        "last_used_at": "",
        "networkfilterid": "none",
        "key_display": "",
        "full_permissions": False,
        "allowed_paths": {},
        "has_key": False,
        "allowed_paths_count": 0,
        "networkfilter_represent": "",
        "has_network_filter": False,
        "represent": "",
    }
    return R(True, data, [], "getDefault", proc(P_KEYS + "GetDefaultAction"))


@route("advice", "getList", "GET")
async def advice_list(ctx: Ctx) -> R:
    return await ctx.pbx.advice()


@route("api-keys", None, "GET,PUT,PATCH,DELETE", with_id=True)
async def keys_one(ctx: Ctx) -> R:
    pbx = ctx.pbx
    recs = [k for k in pbx.state["api_keys"] if str(k["id"]) == ctx.id]
    verb = ctx.request.method
    fn = {"GET": "getRecord", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[verb]
    if not recs:
        return R(
            False,
            [],
            {"error": [f"API key {ctx.id} not found"]},
            fn,
            proc(P_KEYS + "GetRecordAction"),
            None if verb == "GET" else 404,
        )
    rec = recs[0]
    if verb == "GET":
        return R(True, _key_record(rec), [], fn, proc(P_KEYS + "GetRecordAction"))
    if verb == "DELETE":
        pbx.state["api_keys"].remove(rec)
        pbx.api_key_cache.clear()
        pbx.save()
        return R(True, {"id": str(rec["id"])}, [], fn, proc(P_KEYS + "DeleteRecordAction"))
    err = _apply_key_fields(rec, ctx.data, partial=verb == "PATCH")
    if err:
        return R(False, [], {"error": [err]}, fn, proc(P_KEYS + "SaveRecordAction"))
    pbx.api_key_cache.clear()
    pbx.save()
    return R(True, _key_record(rec), [], fn, proc(P_KEYS + "SaveRecordAction"))


def _apply_key_fields(rec: dict[str, Any], data: dict[str, Any], *, partial: bool) -> str | None:
    if "description" in data or not partial:
        desc = str(data.get("description") or "")
        if not 1 <= len(desc) <= 255:
            return "Description is required (1-255 characters)"
        rec["description"] = desc
    if data.get("key"):
        key = str(data["key"])
        if not 32 <= len(key) <= 255:
            return "Key must be 32-255 characters"
        rec["key"] = key
    if "full_permissions" in data:
        v = data["full_permissions"]
        rec["full_permissions"] = v in (True, 1, "1", "true", "on")
    if "allowed_paths" in data:
        paths = data["allowed_paths"] or {}
        if not isinstance(paths, dict):
            return "allowed_paths must be an object"
        for p, perm in paths.items():
            if not PATH_OK.match(p) or not 10 <= len(p) <= 255 or perm not in ("read", "write"):
                return f"Invalid allowed path {p!r}"
        rec["allowed_paths"] = dict(paths)
    if "networkfilterid" in data:
        nf = str(data["networkfilterid"])
        if not re.fullmatch(r"none|\d+", nf):  # the input pattern admits only these
            return f"Invalid network filter {nf!r}"
        rec["networkfilterid"] = nf
    return None


@route("api-keys", None, "POST")
async def keys_create(ctx: Ctx) -> R:
    pbx = ctx.pbx
    rec: dict[str, Any] = {
        "id": pbx.state.get("next_key_id", 2),
        "key": "",
        "full_permissions": False,
        "allowed_paths": {},
        "networkfilterid": "none",
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(pbx.now())),
    }
    err = _apply_key_fields(rec, ctx.data, partial=False)
    if err:
        return R(False, [], {"error": [err]}, "create", proc(P_KEYS + "SaveRecordAction"))
    if not rec["key"]:
        rec["key"] = pbx.fleet.ids.hex(64)  # stored, but never shown (reference §3.1.4)
    pbx.state["next_key_id"] = int(rec["id"]) + 1
    pbx.state["api_keys"].append(rec)
    pbx.api_key_cache.clear()
    pbx.save()
    r = R(True, _key_record(rec), [], "create", proc(P_KEYS + "SaveRecordAction"), 201)
    r.extra["reload"] = f"api-keys/modify/{rec['id']}"
    return r


# ---------------------------------------------------------------- general settings
HIDDEN_SETTINGS = {"PBXVersion", "PBXLicense", "JWTSecret", "WebAdminPassword"}
P_GS = "GeneralSettings\\"


def _visible(pbx: PBX) -> dict[str, str]:
    return {k: v for k, v in pbx.settings.items() if k not in HIDDEN_SETTINGS}


@route("general-settings", None, "GET")
async def gs_get(ctx: Ctx) -> R:
    return R(
        True,
        {"settings": _visible(ctx.pbx), "codecs": [], "passwordValidation": {}},
        [],
        "getList",
        proc(P_GS + "GetSettingsAction"),
    )


@route("general-settings", None, "GET", with_id=True)
async def gs_get_one(ctx: Ctx) -> R:
    name = str(ctx.id)
    if name in HIDDEN_SETTINGS:
        return R(
            False,
            [],
            {"error": [f"Setting '{name}' is not accessible through this API"]},
            "getRecord",
            proc(P_GS + "GetSettingsAction"),
        )
    if name not in ctx.pbx.settings:
        return R(False, [], {"error": [f"Setting '{name}' not found"]}, "getRecord", proc(P_GS + "GetSettingsAction"))
    return R(True, {name: ctx.pbx.settings[name]}, [], "getRecord", proc(P_GS + "GetSettingsAction"))


@route("general-settings", None, "PATCH,PUT,POST")
async def gs_patch(ctx: Ctx) -> R:
    settings = ctx.data.get("settings") if isinstance(ctx.data.get("settings"), dict) else ctx.data
    changed = {}
    for k, v in settings.items():
        if k in HIDDEN_SETTINGS:
            continue
        ctx.pbx.settings[str(k)] = str(v)
        changed[k] = str(v)
    ctx.pbx.save()
    return R(True, {"settings": _visible(ctx.pbx)}, [], "patch", proc(P_GS + "SaveSettingsAction"))


async def handle_module_route(pbx: PBX, request: web.Request, path: str) -> web.Response:
    """``/pbxcore/api/modules/{module}/{action}`` on 2026: answered only by enabled modules with a REST
    callback; none of the emulated modules has one, so (after authentication) "Unknown action".
    An old core URL such as ``/modules/core/enableModule`` lands here too, as a module named ``core``."""
    ok, _auth = authenticate(pbx, request, path, False)
    if not ok:
        return envelope.v3_error(pbx, 401, texts.NOT_AUTHENTICATED)
    parts = path.rstrip("/").split("/")
    action = parts[-1] if len(parts) > 5 else ""
    processor = NS + "PbxExtensionsProcessor"
    return envelope.v3(
        pbx, R(False, [], {"error": [texts.unknown_action(action, processor)]}, action, processor + "::callBack")
    )
