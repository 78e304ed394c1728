"""Control endpoint (plain HTTP on 127.0.0.1): the test tool's view into and hand on the fleet."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .faults import FaultError
from .licensing import LicError
from .pbx import PBX, key_well_formed, normalise_row

if TYPE_CHECKING:
    from .server import FleetRuntime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(obj, ensure_ascii=False).encode(), content_type="application/json"
    )


def _err(status: int, msg: str) -> web.Response:
    return _json({"error": msg}, status)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as e:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"invalid JSON: {e}"}), content_type="application/json"
        ) from e


def make_control_app(fleet: FleetRuntime) -> web.Application:
    app = web.Application()
    r = app.router

    def pbx_of(request: web.Request) -> PBX:
        name = request.match_info["name"]
        p = fleet.pbxs.get(name)
        if p is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no PBX {name!r}"}), content_type="application/json")
        return p

    async def fleet_list(request: web.Request) -> web.Response:
        return _json(
            [
                {
                    "name": p.name,
                    "url": p.url,
                    "generation": p.generation,
                    "machine_id": p.machine_id,
                    "version": p.settings["PBXVersion"],
                }
                for p in fleet.pbxs.values()
            ]
        )

    async def inventory(request: web.Request) -> web.Response:
        return _json(fleet.inventory())

    async def pbx_state(request: web.Request) -> web.Response:
        return _json(pbx_of(request).public_state())

    async def pbx_requests(request: web.Request) -> web.Response:
        return _json(pbx_of(request).requests.as_list())

    async def pbx_requests_clear(request: web.Request) -> web.Response:
        pbx_of(request).requests.clear()
        return _json({"cleared": True})

    async def summary(request: web.Request) -> web.Response:
        return _json({p.name: dict(p.requests.counts) for p in fleet.pbxs.values()})

    async def requests_clear_all(request: web.Request) -> web.Response:
        for p in fleet.pbxs.values():
            p.requests.clear()
        return _json({"cleared": True})

    async def faults_add(request: web.Request) -> web.Response:
        body = await _body(request)
        target = pbx_of(request).faults if "name" in request.match_info else fleet.faults
        specs = body if isinstance(body, list) else [body]
        try:
            added = [target.add(s) for s in specs]
        except (FaultError, TypeError, ValueError) as e:
            return _err(400, str(e))
        return _json({"faults": added})

    async def faults_clear(request: web.Request) -> web.Response:
        (pbx_of(request).faults if "name" in request.match_info else fleet.faults).clear()
        return _json({"cleared": True})

    async def faults_get(request: web.Request) -> web.Response:
        if "name" in request.match_info:
            return _json(pbx_of(request).fault_view.public())
        return _json(fleet.faults.public())

    async def license_key(request: web.Request) -> web.Response:
        p = pbx_of(request)
        body = await _body(request)
        key = str(body.get("key") or "")
        p.settings["PBXLicense"] = key
        bound = False
        if body.get("bind") and key:
            try:
                fleet.licensing.change_key(key, p.machine_id, p.name)
                bound = True
            except LicError as e:
                p.save()
                return _json({"key_stored": True, "bound": False, "error": e.raw}, 409)
        p.lic_cache.clear()
        p.save()
        return _json({"key_stored": True, "bound": bound})

    async def modules_put(request: web.Request) -> web.Response:
        p = pbx_of(request)
        body = await _body(request)
        if not isinstance(body, list):
            return _err(400, "expected a JSON list of module rows")
        try:
            rows = [normalise_row(x) for x in body]
        except (KeyError, TypeError, ValueError) as e:
            return _err(400, f"bad module row: {e}")
        p.state["modules"] = rows
        p.save()
        return _json(rows)

    async def options_put(request: web.Request) -> web.Response:
        p = pbx_of(request)
        body = await _body(request)
        opts = p.state.setdefault("options", {})
        for k in ("localhost_bypass", "rate_limit", "fail2ban"):
            if k in body:
                opts[k] = bool(body[k])
        p.save()
        return _json(opts)

    async def password_put(request: web.Request) -> web.Response:
        # the admin rotates the web password on the box; the inventory keeps the old one on purpose
        p = pbx_of(request)
        body = await _body(request)
        pw = str(body.get("password") or "")
        if not pw:
            return _err(400, "password must not be empty")
        p.state["password"] = pw
        p.sessions.clear()
        p.refresh_tokens.clear()
        p.save()
        return _json({"changed": True})

    async def unban(request: web.Request) -> web.Response:
        p = pbx_of(request)
        was = p.banned_until > p.now()
        p.banned_until = 0.0
        p.f2b_failures = []
        p.login_failures = []
        p.legacy_login_attempts = []
        p.rate_blocked_until = 0.0
        p.rate_hits.clear()
        return _json({"unbanned": was})

    async def snapshot(request: web.Request) -> web.Response:
        return _json({"snapshot": fleet.snapshot(pbx_of(request))})

    async def restore(request: web.Request) -> web.Response:
        p = pbx_of(request)
        body = await _body(request)
        try:
            return _json(fleet.restore(p, str(body.get("snapshot") or ""), bool(body.get("new_machine"))))
        except KeyError:
            return _err(404, f"no snapshot {body.get('snapshot')!r}")

    async def license_check(request: web.Request) -> web.Response:
        return _json({"disabled": await pbx_of(request).license_check()})

    async def companies_post(request: web.Request) -> web.Response:
        body = await _body(request)
        key = body.get("key")
        if key is not None and (not key_well_formed(str(key)) or key in fleet.licensing.companies):
            return _err(400, "key must be a new MIKO-XXXXX-XXXXX-XXXXX-XXXXX value")
        key = fleet.licensing.create_company(
            str(body.get("companyname") or "Example LLC"),
            email=str(body.get("email") or ""),
            contact=str(body.get("contact") or ""),
            tel=str(body.get("tel") or ""),
            inn=str(body.get("inn") or ""),
            seats=int(body.get("seats") or 10),
            products=body.get("products") or [],
            key=key,
        )
        return _json({"key": key})

    async def companies_get(request: web.Request) -> web.Response:
        return _json([fleet.licensing.public_company(k) for k in fleet.licensing.companies])

    async def key_get(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in fleet.licensing.companies:
            return _err(404, "unknown key")
        return _json(fleet.licensing.public_company(key))

    async def key_patch(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in fleet.licensing.companies:
            return _err(404, "unknown key")
        body = await _body(request)
        fleet.licensing.update_company(key, body)
        return _json(fleet.licensing.public_company(key))

    async def seats_get(request: web.Request) -> web.Response:
        try:
            return _json(fleet.licensing.seats(request.match_info["key"]))
        except KeyError:
            return _err(404, "unknown key")

    async def seat_delete(request: web.Request) -> web.Response:
        try:
            n = fleet.licensing.free_seat(request.match_info["key"], request.match_info["machine"])
        except KeyError:
            return _err(404, "unknown key")
        return _json({"freed": n})

    async def coupons_post(request: web.Request) -> web.Response:
        body = await _body(request)
        code = fleet.licensing.create_coupon(
            product_id=int(body.get("product_id", 11)),
            feature_id=int(body.get("feature_id", 33)),
            add_count=int(body.get("add_count", 1)),
            expired=str(body.get("expired") or ""),
            for_key=body.get("for_key"),
            state=str(body.get("state") or "new"),
            code=body.get("code"),
        )
        return _json({"coupon": code, **fleet.licensing.coupons[code]})

    async def clock_advance(request: web.Request) -> web.Response:
        body = await _body(request)
        fleet.clock.advance(float(body.get("seconds") or 0))
        fleet.save_clock()
        return _json({"now": fleet.clock.now()})

    async def clock_get(request: web.Request) -> web.Response:
        return _json({"now": fleet.clock.now(), "scale": fleet.clock.scale})

    r.add_get("/control/fleet", fleet_list)
    r.add_get("/control/inventory", inventory)
    r.add_get("/control/pbx/{name}/state", pbx_state)
    r.add_get("/control/pbx/{name}/requests", pbx_requests)
    r.add_delete("/control/pbx/{name}/requests", pbx_requests_clear)
    r.add_get("/control/requests/summary", summary)
    r.add_delete("/control/requests", requests_clear_all)
    r.add_post("/control/pbx/{name}/faults", faults_add)
    r.add_delete("/control/pbx/{name}/faults", faults_clear)
    r.add_get("/control/pbx/{name}/faults", faults_get)
    r.add_post("/control/faults", faults_add)
    r.add_delete("/control/faults", faults_clear)
    r.add_get("/control/faults", faults_get)
    r.add_put("/control/pbx/{name}/license-key", license_key)
    r.add_put("/control/pbx/{name}/modules", modules_put)
    r.add_put("/control/pbx/{name}/options", options_put)
    r.add_delete("/control/pbx/{name}/bans", unban)
    r.add_put("/control/pbx/{name}/password", password_put)
    r.add_post("/control/pbx/{name}/snapshot", snapshot)
    r.add_post("/control/pbx/{name}/restore", restore)
    r.add_post("/control/pbx/{name}/license-check", license_check)
    r.add_post("/control/licensing/companies", companies_post)
    r.add_get("/control/licensing/companies", companies_get)
    r.add_get("/control/licensing/keys/{key}", key_get)
    r.add_patch("/control/licensing/keys/{key}", key_patch)
    r.add_post("/control/licensing/coupons", coupons_post)
    r.add_get("/control/cabinet/keys/{key}/seats", seats_get)
    r.add_delete("/control/cabinet/keys/{key}/seats/{machine}", seat_delete)
    r.add_post("/control/clock/advance", clock_advance)
    r.add_get("/control/clock", clock_get)
    return app
