"""The fleet runtime: state loading, HTTPS listeners, request dispatch, hourly checks, inventory."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from . import certs, envelope, http_legacy, http_v3, texts
from .faults import Faults
from .http_common import f2b_banned, nginx_429, rate_limited
from .licensing import LicensingService
from .pbx import PBX, VERSIONS, default_modules
from .util import Clock, Ids, atomic_write_bytes, atomic_write_json, read_json

log = logging.getLogger("mikopbx_emulator")
req_log = logging.getLogger("mikopbx_emulator.request")

SNAPSHOT_KEEP_TARGET = ("JWTSecret", "WEBHTTPSPort", "WEBPort", "PBXVersion", "WebAdminLogin")


def flush_request_log() -> None:
    for h in req_log.handlers:
        h.flush()


@dataclass
class FleetOptions:
    count: int = 3
    generation: str = "v3"
    state_dir: Path | None = None
    base_port: int = 0
    control_port: int = 0
    inventory_out: Path | None = None
    time_scale: float = 1.0
    seed: int | None = None
    company_key_on: str | None = None
    rate_limit: bool = True
    fsync: bool = True
    exit_with_parent: bool = False


class FleetRuntime:
    def __init__(self, opts: FleetOptions) -> None:
        self.opts = opts
        if opts.state_dir is None:
            opts.state_dir = Path(tempfile.mkdtemp(prefix="mikopbx-emulator-"))
        self.state_dir = Path(opts.state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.inventory_path = (opts.inventory_out or self.state_dir / "inventory.yml").resolve()
        self.fsync = opts.fsync
        self.rate_limit = opts.rate_limit
        saved_clock = read_json(self.state_dir / "clock.json", {}) or {}
        start = max(time.time() + float(saved_clock.get("offset", 0)), float(saved_clock.get("now", 0)))
        self.clock = Clock(opts.time_scale, start)
        self.ids = Ids(opts.seed)
        self.faults = Faults()
        self.background: set[asyncio.Task[Any]] = set()
        self.licensing = LicensingService(self.state_dir / "licensing.json", self.ids, self.clock.now)
        self.ca = certs.CertificateAuthority(self.state_dir)
        self.pbxs: dict[str, PBX] = {}
        self.by_port: dict[int, PBX] = {}
        self.meta: dict[str, Any] = read_json(self.state_dir / "fleet.json", {}) or {}
        self.runner: web.AppRunner | None = None
        self.control_runner: web.AppRunner | None = None
        self.control_port = 0
        self.stopping = asyncio.Event()
        self._socks: dict[str, socket.socket] = {}
        self._ppid = os.getppid()
        self._ticks = 0

    def ids_int(self, a: int, b: int) -> int:
        return int(self.ids.uniform(a, b))

    # ------------------------------------------------------------------ state
    def _new_state(self, index: int, name: str, generation: str) -> dict[str, Any]:
        api_keys = []
        if generation == "v3":
            api_keys.append(
                {
                    "id": 1,
                    "key": self.ids.hex(64),
                    "description": "emulator inventory key",
                    "full_permissions": True,
                    "allowed_paths": {},
                    "networkfilterid": "none",
                    "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.clock.now())),
                }
            )
        return {
            "name": name,
            "generation": generation,
            "port": 0,
            "password": self.ids.password(),
            "api_keys": api_keys,
            "next_key_id": 2,
            "machine_id": self.ids.machine_id(),
            "options": {"localhost_bypass": False},
            "settings": {
                "PBXLicense": "",
                "PBXVersion": VERSIONS[generation],
                "Name": name,
                "Description": "",
                "WebAdminLogin": "admin",
                "WEBPort": "80",
                "WEBHTTPSPort": "0",
                "RedirectToHttps": "1" if generation == "v3" else "0",
                "PBXFirewallEnabled": "1" if generation == "v3" else "0",
                "PBXRateLimitEnabled": "1",
                "APIQueueMaxLength": "50",
                "APIRequestTTL": "35",
                "JWTSecret": self.ids.hex(64),
                "PBXLanguage": "en-en",
                "WebAdminLanguage": "en",
                "VirtualHardwareType": "KVM",
            },
            "modules": default_modules(),
        }

    def load(self) -> None:
        opts = self.opts
        pdir = self.state_dir / "pbx"
        pdir.mkdir(exist_ok=True)
        fresh = not self.meta
        for i in range(opts.count):
            name = f"pbx-{i + 1:03d}"
            path = pdir / f"{name}.json"
            state = read_json(path)
            if state is None:
                gen = opts.generation
                if gen == "mixed":
                    gen = "v3" if i % 2 == 0 else "legacy"
                state = self._new_state(i, name, gen)
                if opts.base_port:
                    state["port"] = opts.base_port + i
                pbx = PBX(self, state, path)
            else:
                pbx = PBX(self, state, path)
            self.pbxs[name] = pbx
        if fresh and opts.company_key_on:
            self._seed_company(opts.company_key_on)
        self.meta.setdefault("created_at", time.time())
        self.meta["count"] = max(int(self.meta.get("count", 0)), opts.count)
        # a restart with the same --seed must not replay the previous run's random values (session
        # ids, tokens, generated keys): continue from a per-run derived seed
        self.meta["runs"] = int(self.meta.get("runs", 0)) + 1
        if opts.seed is not None and self.meta["runs"] > 1:
            self.ids = Ids(opts.seed * 1_000_003 + self.meta["runs"])
            self.licensing.ids = self.ids

    def _seed_company(self, spec: str) -> None:
        names = list(self.pbxs)
        pats = [s.strip() for s in spec.split(",") if s.strip()]
        chosen = [n for n in names if any(p == "all" or fnmatch.fnmatch(n, p) for p in pats)]
        key = self.licensing.create_company(
            "Emulated Fleet LLC",
            email="fleet@example.com",
            contact="Fleet Operator",
            tel="+10000000000",
            products=[
                {
                    "id": 101,
                    "name": "Users and access rights",
                    "expired": "",
                    "trial": False,
                    "features": [{"id": 201, "name": "Users and access rights", "count": 10}],
                }
            ],
        )
        self.meta["company_key"] = key
        for n in chosen:
            p = self.pbxs[n]
            p.settings["PBXLicense"] = key
            try:
                self.licensing.change_key(key, p.machine_id, p.name)
            except Exception:  # noqa: BLE001 - more hosts than seats: key stored, binding missing
                pass

    def save_meta(self) -> None:
        self.meta["control_port"] = self.control_port
        atomic_write_json(self.state_dir / "fleet.json", self.meta, fsync=self.fsync)

    def save_clock(self) -> None:
        now = self.clock.now()
        atomic_write_json(self.state_dir / "clock.json", {"now": now, "offset": now - time.time()}, fsync=False)

    # ------------------------------------------------------------------ listeners
    def _bind(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        return s

    async def start(self) -> None:
        self.load()
        try:
            self.inventory_path.unlink()
        except FileNotFoundError:
            pass
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=75)
        await self.runner.setup()
        sites = []
        dirty = False
        for pbx in self.pbxs.values():
            try:
                sock = self._bind(pbx.port)
            except OSError as e:
                if pbx.port and not self.opts.base_port:
                    log.warning("%s: saved port %s unavailable (%s); using a new one", pbx.name, pbx.port, e)
                    sock = self._bind(0)
                else:
                    raise SystemExit(f"cannot bind 127.0.0.1:{pbx.port} for {pbx.name}: {e}") from e
            port = sock.getsockname()[1]
            if pbx.port != port or pbx.settings.get("WEBHTTPSPort") != str(port) or not pbx.path.exists():
                pbx.state["port"] = port
                pbx.settings["WEBHTTPSPort"] = str(port)
                pbx.save(fsync=False)
                dirty = True
            self.by_port[port] = pbx
            ctx = certs.server_context(self.ca.server_pem(pbx.name))
            sites.append(web.SockSite(self.runner, sock, ssl_context=ctx, backlog=256))
        for s in sites:
            await s.start()
        self.licensing.save()
        if dirty and self.fsync:
            os.sync()  # one flush for all new state files instead of two fsyncs per PBX
        from .control import make_control_app

        capp = make_control_app(self)
        self.control_runner = web.AppRunner(capp, access_log=None, handle_signals=False)
        await self.control_runner.setup()
        cport = self.opts.control_port or int(self.meta.get("control_port") or 0)
        try:
            csock = self._bind(cport)
        except OSError:
            if self.opts.control_port:
                raise
            csock = self._bind(0)
        self.control_port = csock.getsockname()[1]
        await web.SockSite(self.control_runner, csock).start()
        self.save_meta()
        now = self.clock.now()
        for pbx in self.pbxs.values():
            pbx.next_check_at = now + 3600 + self.ids.uniform(0, 300)
        await self._wait_ready()
        self.write_inventory()
        self._checker = asyncio.ensure_future(self._hourly_checker())
        log.info(
            "fleet ready: %d PBXs, control http://127.0.0.1:%d, inventory %s, state %s",
            len(self.pbxs),
            self.control_port,
            self.inventory_path,
            self.state_dir,
        )

    async def _wait_ready(self) -> None:
        ports = list(self.by_port) + [self.control_port]
        sem = asyncio.Semaphore(100)

        async def probe(port: int) -> None:
            async with sem:
                for _n in range(100):
                    try:
                        _r, w = await asyncio.open_connection("127.0.0.1", port)
                        w.close()
                        return
                    except OSError:
                        await asyncio.sleep(0.05)
                raise SystemExit(f"listener 127.0.0.1:{port} does not accept connections")

        await asyncio.gather(*(probe(p) for p in ports))

    def hostvars(self, pbx: PBX) -> dict[str, Any]:
        hv: dict[str, Any] = {
            "mikopbx_url": pbx.url,
            "mikopbx_generation": pbx.generation,
            "mikopbx_username": pbx.settings["WebAdminLogin"],
            "mikopbx_password": pbx.state["password"],
        }
        full = [k for k in pbx.state["api_keys"] if k.get("full_permissions")]
        if pbx.generation == "v3" and full:
            hv["mikopbx_api_key"] = full[0]["key"]
        return hv

    def inventory(self) -> dict[str, Any]:
        return {
            "all": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "mikopbx_emulator_control_url": f"http://127.0.0.1:{self.control_port}",
                    "mikopbx_ca_path": str(self.ca.ca_path),
                },
                "hosts": {p.name: self.hostvars(p) for p in self.pbxs.values()},
            }
        }

    def write_inventory(self) -> None:
        inv = self.inventory()
        # JSON scalars are valid YAML double-quoted scalars, so no YAML library is needed
        lines = ["# Written by mikopbx-emulator once every listener accepted connections.", "all:", "  vars:"]
        for k, v in inv["all"]["vars"].items():
            lines.append(f"    {k}: {json.dumps(v)}")
        lines.append("  hosts:")
        for name, hv in inv["all"]["hosts"].items():
            lines.append(f"    {name}:")
            for k, v in hv.items():
                lines.append(f"      {k}: {json.dumps(v)}")
        atomic_write_json(self.state_dir / "inventory.json", inv, fsync=self.fsync)
        atomic_write_bytes(self.inventory_path, ("\n".join(lines) + "\n").encode(), fsync=self.fsync)

    # ------------------------------------------------------------------ request dispatch
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        pbx = self.by_port.get(sockname[1]) if sockname else None
        if pbx is None:
            return web.Response(status=421, text="Misdirected request")
        path = request.path
        kind = "read" if request.method == "GET" else "write"
        if f2b_banned(pbx, request):
            # iptables drops a banned client: it never reaches nginx (and never our request log)
            if request.transport is not None:
                request.transport.abort()
            req_log.info("%s %s %s dropped (fail2ban ban)", pbx.name, request.method, path)
            return web.Response(status=403, text="Access denied")
        try:
            resp, kind = await self._route(pbx, request, path)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: internal error on %s %s", pbx.name, request.method, path)
            resp = web.Response(status=500, text="emulator internal error", content_type="text/plain")
        resp.headers["Server"] = "nginx"
        pbx.requests.add(self.clock.now(), request.method, path, resp.status, kind)
        req_log.info(
            "%s %s %s %d %s %.1fms",
            pbx.name,
            request.method,
            path,
            resp.status,
            kind,
            (time.perf_counter() - t0) * 1000,
        )
        return resp

    async def _route(self, pbx: PBX, request: web.Request, path: str) -> tuple[web.StreamResponse, str]:
        # nginx level first: the static PONG, injected 429s, the Lua rate limiter
        if path == "/pbxcore/api/system/ping":
            return envelope.plain(200, "PONG"), "read"
        kind = "read" if request.method == "GET" else "write"
        if pbx.fault_view.consume("rate_limit", path):
            return nginx_429(), kind
        if path.startswith("/pbxcore/api/") and rate_limited(pbx, request):
            return nginx_429(), kind
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={"Access-Control-Allow-Origin": "*"}), "read"
        if path.startswith("/pbxcore/api/"):
            if pbx.generation == "v3":
                if path.startswith(http_v3.PREFIX):
                    return await http_v3.handle(pbx, request, path)
                if path.startswith("/pbxcore/api/modules/"):
                    # the only legacy route 2026 keeps: third-party module APIs
                    return await http_v3.handle_module_route(pbx, request, path), kind
                return envelope.v3_not_found(pbx, path, texts.endpoint_not_found(path)), kind
            return await http_legacy.handle_api(pbx, request, path)
        if path.startswith("/admin-cabinet"):
            return await http_legacy.handle_admin(pbx, request, path)
        if path in ("/", ""):
            return web.Response(status=302, headers={"Location": "/admin-cabinet/session/index"}), "read"
        return web.Response(
            status=404, text="<html><body><h1>404 Not Found</h1></body></html>", content_type="text/html"
        ), kind

    # ------------------------------------------------------------------ periodic work
    async def _hourly_checker(self) -> None:
        while not self.stopping.is_set():
            ev = self.clock.wake_event()
            try:
                await asyncio.wait_for(ev.wait(), timeout=min(1.0, max(0.02, self.clock.real(30))))
            except TimeoutError:
                pass
            finally:
                self.clock.drop_event(ev)
            now = self.clock.now()
            for pbx in list(self.pbxs.values()):
                if pbx.next_check_at <= now:
                    pbx.next_check_at = now + 3600 + self.ids.uniform(0, 300)
                    try:
                        changed = await pbx.license_check()
                    except Exception:
                        log.exception("%s: licence check failed", pbx.name)
                        continue
                    if changed:
                        log.info("%s: hourly licence check disabled %s", pbx.name, ",".join(changed))
            self.save_clock()
            flush_request_log()
            self._ticks += 1
            if self._ticks % 60 == 0:
                for pbx in self.pbxs.values():
                    pbx.prune()
            if self.opts.exit_with_parent and os.getppid() != self._ppid:
                log.warning("parent process %d is gone: shutting down", self._ppid)
                self.stopping.set()

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, pbx: PBX) -> str:
        sid = f"{pbx.name}-{int(time.time() * 1000)}-{self.ids.hex(6)}"
        snap = {
            "id": sid,
            "taken_at": self.clock.now(),
            "source": pbx.name,
            "generation": pbx.generation,
            "machine_id": pbx.machine_id,
            "settings": dict(pbx.settings),
            "modules": [dict(m) for m in pbx.modules],
        }
        atomic_write_json(self.state_dir / "snapshots" / f"{sid}.json", snap, fsync=self.fsync)
        return sid

    def restore(self, pbx: PBX, sid: str, new_machine: bool) -> dict[str, Any]:
        if "/" in sid or sid.startswith("."):
            raise KeyError(sid)
        snap = read_json(self.state_dir / "snapshots" / f"{sid}.json")
        if snap is None:
            raise KeyError(sid)
        keep = {k: pbx.settings[k] for k in SNAPSHOT_KEEP_TARGET if k in pbx.settings}
        pbx.state["settings"] = dict(snap["settings"]) | keep
        pbx.state["modules"] = [dict(m) for m in snap["modules"]]
        if new_machine:
            pbx.state["machine_id"] = self.ids.machine_id()
        # a restore reboots the box: Redis-held runtime state is gone
        pbx.lic_cache.clear()
        pbx.feature_cache.clear()
        pbx.market_cache.clear()
        pbx.sessions.clear()
        pbx.refresh_tokens.clear()
        pbx.banned_until = 0.0
        pbx.f2b_failures = []
        pbx.save()
        return {"name": pbx.name, "machine_id": pbx.machine_id, "snapshot": sid}

    # ------------------------------------------------------------------ lifecycle
    async def stop(self) -> None:
        self.stopping.set()
        for t in list(self.background):
            t.cancel()
        checker = getattr(self, "_checker", None)
        if checker:
            checker.cancel()
        if self.control_runner:
            await self.control_runner.cleanup()
        if self.runner:
            await self.runner.cleanup()
        for p in self.pbxs.values():
            p.close_db()
        self.save_clock()
        flush_request_log()


async def run_fleet(opts: FleetOptions) -> int:
    fleet = FleetRuntime(opts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fleet.stopping.set)
    t0 = time.monotonic()
    await fleet.start()
    log.info("startup took %.2fs (pid %d)", time.monotonic() - t0, os.getpid())
    print(
        f"mikopbx-emulator: {len(fleet.pbxs)} PBXs ready; inventory {fleet.inventory_path}; "
        f"control http://127.0.0.1:{fleet.control_port}",
        flush=True,
    )
    await fleet.stopping.wait()
    log.info("shutting down")
    await fleet.stop()
    return 0
