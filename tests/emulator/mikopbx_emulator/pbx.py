"""One emulated PBX: persistent state and the processor actions of both API generations.

HTTP concerns (routing, auth, envelopes) live in ``http_v3`` / ``http_legacy``; the actions here
return an ``R`` (the PBXApiResult fields) and never look at the transport.
"""

from __future__ import annotations

import asyncio
import collections
import html
import json
import re
import shlex
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import texts
from .faults import LIB_HOST, LICENSING_HOSTS, RELEASES_HOST, Faults, FaultView
from .licensing import DEFAULT_CATALOGUE, LicError, catalogue_entry
from .util import atomic_write_json, iso

if TYPE_CHECKING:
    from .server import FleetRuntime

VERSIONS = {"v3": "2026.1.223", "legacy": "2024.1.114"}
LIC_CACHE_TTL = 120.0
LEGACY_FEATURE_OK_TTL = 86400.0
LEGACY_FEATURE_FAIL_TTL = 120.0
MARKET_CACHE_TTL = 3600.0
ENV_LIB_TIMEOUT = 5.0  # emulated seconds a licence call spends when egress is blocked

MODULE_COLUMNS = [
    "id",
    "uniqid",
    "name",
    "version",
    "developer",
    "supportemail",
    "path",
    "description",
    "wiki_links",
    "disabled",
    "disableReason",
    "disableReasonText",
]
ROW_FIELDS = MODULE_COLUMNS[1:] + ["lic_feature_id", "lic_product_id"]

NS = "MikoPBX\\PBXCoreREST\\Lib\\"
P_LIC = NS + "LicenseManagementProcessor"
P_MOD = NS + "ModulesManagementProcessor"


def proc(cls: str) -> str:
    return f"{NS}{cls}::main"


@dataclass
class R:
    """A processor result (PBXApiResult)."""

    result: bool
    data: Any = field(default_factory=list)
    messages: Any = field(default_factory=list)
    function: str = ""
    processor: str = ""
    http_code: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def key_well_formed(key: str) -> bool:
    # the server-side check in every licence action: length 28 and the MIKO- prefix, nothing else
    return len(key) == 28 and key.startswith("MIKO-")


def default_modules() -> list[dict[str, Any]]:
    rows = []
    for uniqid in ("ModuleTemplate", "ModuleBackup"):
        m = catalogue_entry(uniqid)
        assert m is not None
        rows.append(normalise_row({"uniqid": uniqid, "name": m["name"], "version": m["version"], "disabled": "0"}))
    return rows


def normalise_row(r: dict[str, Any]) -> dict[str, Any]:
    uniqid = str(r["uniqid"])
    cat = catalogue_entry(uniqid) or {}
    disabled = r.get("disabled", "0")
    if isinstance(disabled, bool):
        disabled = "1" if disabled else "0"
    return {
        "uniqid": uniqid,
        "name": str(r.get("name") or cat.get("name") or uniqid),
        "version": str(r.get("version") or cat.get("version") or "1.0.0"),
        "developer": str(r.get("developer") or cat.get("developer") or "MIKO"),
        "supportemail": str(r.get("supportemail") or "help@example.com"),
        "path": str(r.get("path") or f"/storage/usbdisk1/mikopbx/custom_modules/{uniqid}"),
        "description": str(r.get("description") or cat.get("description") or ""),
        "wiki_links": str(r.get("wiki_links") or ""),
        "disabled": str(int(disabled)) if str(disabled) in ("0", "1") else "1",
        "disableReason": str(r.get("disableReason") or ""),
        "disableReasonText": str(r.get("disableReasonText") or ""),
        "lic_feature_id": int(r.get("lic_feature_id", cat.get("lic_feature_id", 0)) or 0),
        "lic_product_id": int(r.get("lic_product_id", cat.get("lic_product_id", 0)) or 0),
    }


class RequestLog:
    """Per-PBX request log: compact tuples (interned strings) in a bounded deque, plus exact
    per-kind counters that survive the truncation, so a long benchmark cannot exhaust memory."""

    MAXLEN = 5000

    def __init__(self) -> None:
        self.entries: collections.deque[tuple[float, str, str, int, str]] = collections.deque(maxlen=self.MAXLEN)
        self.counts = {"read": 0, "write": 0, "auth": 0, "total": 0}

    def add(self, ts: float, method: str, path: str, status: int, kind: str) -> None:
        self.entries.append((ts, sys.intern(method), sys.intern(path), status, sys.intern(kind)))
        self.counts[kind] += 1
        self.counts["total"] += 1

    def clear(self) -> None:
        self.entries.clear()
        self.counts = dict.fromkeys(self.counts, 0)

    def as_list(self) -> list[dict[str, Any]]:
        return [{"ts": t, "method": m, "path": p, "status": st, "kind": k} for t, m, p, st, k in self.entries]

    def __iter__(self) -> Any:
        return iter(self.as_list())


class PBX:
    def __init__(self, fleet: FleetRuntime, state: dict[str, Any], path: Path) -> None:
        self.fleet = fleet
        self.state = state
        self.path = path
        self.name: str = state["name"]
        self.generation: str = state["generation"]
        self.faults = Faults()
        self.fault_view = FaultView(self.faults, fleet.faults)
        self.requests = RequestLog()
        # runtime-only state (like Redis on the box)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.remember_tokens: dict[str, float] = {}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.login_failures: list[float] = []
        self.refresh_hits: list[float] = []
        self.legacy_login_attempts: list[float] = []
        self.lic_cache: dict[str, tuple[float, R]] = {}
        self.feature_cache: dict[str, tuple[float, R]] = {}
        self.market_cache: dict[str, tuple[float, R]] = {}
        self.rate_hits: collections.deque[float] = collections.deque()
        self.f2b_failures: list[float] = []
        self.banned_until = 0.0
        self.rate_blocked_until = 0.0
        self.rate_offences = 0
        self.api_key_cache: dict[str, dict[str, Any] | None] = {}
        self.next_check_at = 0.0
        self.version = 0
        self._db: sqlite3.Connection | None = None
        self._db_version = -1
        self.pids = [fleet.ids_int(1000, 30000) + i for i in range(4)]
        self._pid_i = 0
        self.lock = asyncio.Lock()  # serialises module manipulation like the named mutex
        # the API worker pool: 3 WorkerApiCommands processes on 2026, 4 on 2024
        self.pool = asyncio.Semaphore(3 if self.generation == "v3" else 4)
        self.queued = 0

    # ------------------------------------------------------------------ state & persistence
    @property
    def settings(self) -> dict[str, str]:
        return self.state["settings"]

    @property
    def modules(self) -> list[dict[str, Any]]:
        return self.state["modules"]

    @property
    def machine_id(self) -> str:
        return self.state["machine_id"]

    @property
    def port(self) -> int:
        return int(self.state["port"])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def option(self, name: str) -> bool:
        return bool(self.state.get("options", {}).get(name))

    def save(self, *, fsync: bool | None = None) -> None:
        self.version += 1
        atomic_write_json(self.path, self.state, fsync=self.fleet.fsync if fsync is None else fsync)

    MAX_TOKENS = 10000

    def prune(self) -> None:
        """Drop expired sessions/tokens and bound their number (a login-heavy benchmark must not
        grow memory without limit; the oldest go first)."""
        now = self.now()
        self.sessions = {k: v for k, v in self.sessions.items() if v["expires"] >= now}
        self.refresh_tokens = {k: v for k, v in self.refresh_tokens.items() if v["expires"] >= now}
        self.remember_tokens = {k: v for k, v in self.remember_tokens.items() if v >= now}
        for d in (self.sessions, self.refresh_tokens, self.remember_tokens):
            while len(d) > self.MAX_TOKENS:
                d.pop(next(iter(d)))

    def pid(self) -> int:
        self._pid_i = (self._pid_i + 1) % (3 if self.generation == "v3" else 4)
        return self.pids[self._pid_i]

    def now(self) -> float:
        return self.fleet.clock.now()

    def module(self, uniqid: str) -> dict[str, Any] | None:
        for m in self.modules:
            if m["uniqid"] == uniqid:
                return m
        return None

    def public_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "settings": dict(self.settings),
            "modules": [dict(m) for m in self.modules],
            "machine_id": self.machine_id,
            "generation": self.generation,
            "faults": self.fault_view.public(),
            "options": dict(self.state.get("options", {})),
            "api_keys": [
                {
                    "id": k["id"],
                    "description": k["description"],
                    "full_permissions": k["full_permissions"],
                    "allowed_paths": k["allowed_paths"],
                }
                for k in self.state["api_keys"]
            ],
        }

    # ------------------------------------------------------------------ licence library plumbing
    async def lib(self) -> None:
        """Pre-flight of every call the licence library makes to the licensing service: applies
        faults.  Raises LicError with code 0 (local service silent) or >= 500 (upstream failure)."""
        fv = self.fault_view
        slow = fv.get("licensing_slow")
        if slow:
            await self.fleet.clock.sleep(float(slow["delay"]))
        if fv.get("licensing_down"):
            raise LicError(0, texts.RAW_NO_ANSWER)
        if fv.for_host("dns_failure", LIB_HOST):
            raise LicError(502, texts.RAW_HOST_LOOKUP)
        if fv.for_host("egress_blocked", LIB_HOST):
            await self.fleet.clock.sleep(ENV_LIB_TIMEOUT)
            raise LicError(504, texts.RAW_UPSTREAM_TIMEOUT)
        if fv.for_host("tls_intercept", LIB_HOST):
            raise LicError(502, texts.RAW_TLS)
        if fv.get("licensing_5xx"):
            raise LicError(503, texts.RAW_UPSTREAM_5XX)

    @property
    def lic(self) -> Any:
        return self.fleet.licensing

    # ------------------------------------------------------------------ licence actions
    async def get_license_info(self) -> R:
        v3 = self.generation == "v3"
        r = R(False, function="getLicenseInfo", processor=proc("License\\GetLicenseInfoAction"))
        key = self.settings.get("PBXLicense", "")
        if not key_well_formed(key):
            r.messages = {"error": [texts.tr("lic_WrongLicenseKeyOrEmpty")]}
            r.http_code = 400 if v3 else None
            return r
        cached = self.lic_cache.get(key)
        if cached and cached[0] > self.now():
            return cached[1]
        try:
            await self.lib()
            info = self.lic.license_info(key, self.machine_id)
        except LicError as e:
            r.messages = [e.raw] if v3 else []
            if not v3:
                self.lic_cache[key] = (self.now() + LIC_CACHE_TTL, r)
            return r
        # PHP json_encode defaults: non-ASCII as \uXXXX and "/" escaped
        r.result = True
        r.data = {"licenseInfo": json.dumps(info, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")}
        self.lic_cache[key] = (self.now() + LIC_CACHE_TTL, r)
        return r

    def _set_setting(self, key: str, value: str) -> None:
        self.settings[key] = value
        self.save()

    async def process_user_request(self, data: dict[str, Any]) -> R:
        v3 = self.generation == "v3"
        r = R(False, function="processUserRequest", processor=proc("License\\ProcessUserRequestAction"))
        lic_key = str(data.get("licKey") or "")
        coupon = str(data.get("coupon") or "")
        info: list[str] = []
        lic_msgs: list[str] = []
        if key_well_formed(lic_key):
            stored = self.settings.get("PBXLicense", "")
            if lic_key == stored:
                if v3:
                    r.result = True
                    r.data = {"PBXLicense": lic_key}
                    info.append(texts.tr("lic_SuccessfulActivation"))
                # legacy: nothing set at all -> result false, empty messages
            else:
                try:
                    await self.lib()
                    self.lic.change_key(lic_key, self.machine_id, self.name)
                except LicError as e:
                    if v3:
                        lic_msgs.append(
                            texts.translate_code(e.code)
                            if e.code >= 2000
                            else texts.tr("lic_HostLookupFailed")
                            if e.raw == texts.RAW_HOST_LOOKUP
                            else texts.tr("lic_FailedCheckLicense")
                        )
                        # licence-server verdicts (codes 2xxx) arrive with library code 400
                        if e.code >= 2000 or e.code == 400 or "2026" in e.raw:
                            r.http_code = 400
                        elif e.code == 0:
                            r.http_code = 503
                        elif e.code >= 500:
                            r.http_code = 502
                        else:
                            r.http_code = 400
                    else:
                        if "2026" in e.raw:
                            lic_msgs.append(texts.tr("lic_FailedCheckLicense2026"))
                        elif e.raw:
                            lic_msgs.append(e.raw)
                        else:
                            lic_msgs.append(texts.tr("lic_FailedCheckLicense"))
                else:
                    self._set_setting("PBXLicense", lic_key)
                    r.result = True
                    r.data = {"PBXLicense": lic_key}
                    info.append(texts.tr("lic_SuccessfulActivation"))
            if coupon:
                try:
                    await self.lib()
                    self.lic.activate_coupon(lic_key, coupon)
                except LicError as e:
                    r.result = False
                    lic_msgs.append(
                        texts.translate_code(e.code) if e.code >= 2000 else texts.tr("lic_FailedCheckLicense")
                    )
                    if v3:
                        r.http_code = 502
                else:
                    r.result = True
                    info.append(texts.tr("lic_SuccessfulCouponActivation"))
            msgs: dict[str, Any] = {}
            if info:
                msgs["info"] = info
            if lic_msgs:
                msgs["license"] = lic_msgs
            r.messages = msgs or []
            return r
        # missing or malformed key: silently a trial registration (reference §5.2)
        try:
            await self.lib()
            key = self.lic.trial(data, self.machine_id, self.name)
        except LicError as e:
            if e.code >= 2000:
                msg = texts.translate_code(e.code)
            elif e.raw == texts.RAW_TRIAL_FIELDS:
                msg = texts.tr("lic_UnknownLicenseMessage")
            else:
                msg = texts.tr("lic_GetTrialErrorCheckInternet")
            r.messages = {"license": [msg]}
            r.http_code = 502 if v3 else None
            return r
        self._set_setting("PBXLicense", key)
        r.result = True
        r.data = {"PBXLicense": key}
        r.messages = {"info": texts.tr("lic_SuccessfulActivation")}  # a string here, not a list
        return r

    async def reset_key(self) -> R:
        key = self.settings.get("PBXLicense", "")
        if key:
            try:
                await self.lib()
                self.lic.release(key, self.machine_id)
            except LicError:
                pass  # the server never heard of it: the seat stays taken (only the cabinet frees it now)
        self._set_setting("PBXLicense", "")
        return R(True, [], [], "resetKey", proc("License\\ResetLicenseAction"))

    async def ping(self) -> R:
        r = R(False, [], [], "ping", proc("License\\PingAction"))
        for attempt in range(3):
            try:
                await self.lib()
                r.result = True
                return r
            except LicError:
                if attempt < 2:
                    await self.fleet.clock.sleep(3)
        return r

    async def send_metrics(self) -> R:
        key = self.settings.get("PBXLicense", "")
        last = float(self.state.get("metrics_sent_at") or 0)
        if key and self.now() - last >= 86400:
            self.state["metrics_sent_at"] = self.now()
            self.save()
            try:
                await self.lib()
                self.lic.record_metrics(key, self.name, {"PBXname": f"MikoPBX@{self.settings['PBXVersion']}"})
            except LicError:
                pass
        return R(True, [], [], "sendPBXMetrics", proc("License\\SendMetricsAction"))

    async def capture_feature(self, data: dict[str, Any]) -> R:
        v3 = self.generation == "v3"
        r = R(False, [], [], "captureFeatureForProductId", proc("License\\CaptureFeatureForProductIdAction"))
        fid = data.get("licFeatureId") or data.get("featureId") if v3 else data.get("licFeatureId")
        pid = data.get("licProductId") or data.get("productId") if v3 else data.get("licProductId")
        try:
            fid_i, pid_i = int(fid or 0), int(pid or 0)
        except (TypeError, ValueError):
            fid_i, pid_i = 0, 0
        if not fid or not pid:
            r.messages = {"error": [texts.FEATURE_IDS_EMPTY]} if v3 else [texts.FEATURE_IDS_EMPTY]
            return r
        if fid_i <= 0:
            r.result = True
            return r
        key = self.settings.get("PBXLicense", "")
        try:
            await self.lib()
            try:
                self.lic.capture_feature(key, self.machine_id, self.name, fid_i)
            except LicError:
                self.lic.add_trial(key, pid_i)
                self.lic.capture_feature(key, self.machine_id, self.name, fid_i)
        except LicError as e:
            r.messages = {
                "license": [texts.translate_code(e.code) if e.code >= 2000 else texts.tr("lic_FailedCheckLicense")]
            }
            return r
        r.result = True
        return r

    async def feature_status(self) -> R:
        """Legacy getMikoPBXFeatureStatus: is the base feature 33 available to this machine."""
        r = R(False, [], [], "getMikoPBXFeatureStatus", proc("License\\GetMikoPBXFeatureStatusAction"))
        key = self.settings.get("PBXLicense", "")
        if not key_well_formed(key):
            r.messages = {"license": [texts.tr("lic_WrongLicenseKeyOrEmpty")]}
            return r
        cached = self.feature_cache.get(key)
        if cached and cached[0] > self.now():
            return cached[1]
        try:
            await self.lib()
            self.lic.feature_available(key, self.machine_id, 33)
        except LicError as e:
            r.messages = {
                "license": [texts.translate_code(e.code) if e.code >= 2000 else texts.tr("lic_FailedCheckLicense")]
            }
            self.feature_cache[key] = (self.now() + LEGACY_FEATURE_FAIL_TTL, r)
            return r
        r.result = True
        self.feature_cache[key] = (self.now() + LEGACY_FEATURE_OK_TTL, r)
        return r

    # ------------------------------------------------------------------ modules
    async def enable_module(self, uniqid: str) -> R:
        v3 = self.generation == "v3"
        r = R(
            False,
            [],
            [],
            "enable" if v3 else "enableModule",
            f"{NS}Modules\\EnableModuleAction::enableModule" if v3 else f"{P_MOD}::callBack",
        )
        async with self.lock:
            m = self.module(uniqid)
            if m is None:
                r.messages = {"error": [texts.module_not_found(uniqid)]}
                return r
            if m["lic_feature_id"] > 0:
                key = self.settings.get("PBXLicense", "")
                try:
                    await self.lib()
                    if not key_well_formed(key):
                        raise LicError.of(2008)
                    self.lic.feature_available(key, self.machine_id, m["lic_feature_id"])
                except LicError as e:
                    m["disabled"] = "1"
                    m["disableReason"] = "DisabledByLicense"
                    m["disableReasonText"] = e.raw
                    self.save()
                    r.messages = {
                        "license": [
                            texts.translate_code(e.code) if e.code >= 2000 else texts.tr("lic_FailedCheckLicense")
                        ]
                    }
                    return r
            # enabling does not clear disableReason / disableReasonText (reference §7.1)
            m["disabled"] = "0"
            self.save()
            r.result = True
            return r

    async def disable_module(self, uniqid: str, reason: str | None, reason_text: str | None) -> R:
        v3 = self.generation == "v3"
        r = R(
            False,
            [],
            [],
            "disable" if v3 else "disableModule",
            f"{NS}Modules\\DisableModuleAction::main" if v3 else f"{P_MOD}::callBack",
        )
        async with self.lock:
            m = self.module(uniqid)
            if m is None:
                r.messages = {"error": [texts.module_not_found(uniqid)]}
                return r
            if reason is None:
                # 2026 UI sends an empty reason, the 2024 UI sends DisabledByUser
                reason = "" if v3 else "DisabledByUser"
            m["disabled"] = "1"
            m["disableReason"] = reason
            m["disableReasonText"] = reason_text or ""
            self.save()
            r.result = True
            return r

    async def license_check(self) -> list[str]:
        """The hourly checkModules(): switch off enabled modules whose feature is unavailable.
        When the licensing service cannot be reached the check does nothing (no verdict)."""
        key = self.settings.get("PBXLicense", "")
        changed: list[str] = []
        async with self.lock:
            candidates = [m for m in self.modules if m["disabled"] == "0" and m["lic_feature_id"] > 0]
            if not candidates:
                return changed
            try:
                await self.lib()
            except LicError:
                return changed
            for m in candidates:
                try:
                    if not key_well_formed(key):
                        raise LicError.of(2008)
                    self.lic.feature_available(key, self.machine_id, m["lic_feature_id"])
                except LicError as e:
                    m["disabled"] = "1"
                    m["disableReason"] = "DisabledByLicense"
                    m["disableReasonText"] = e.raw
                    changed.append(m["uniqid"])
            if changed:
                self.save()
        return changed

    async def releases(self) -> str | None:
        """None when releases.mikopbx.com answers, else the curl-like failure detail.  Like the real
        marketplace client: up to 3 tries, 15 s timeout each, 2 s pause between tries, so a silently
        dropped connection (egress_blocked) outlasts both generations' worker wait."""
        fv = self.fault_view
        err = None
        for attempt in range(3):
            slow = fv.get("licensing_slow")
            if slow:
                await self.fleet.clock.sleep(min(15.0, float(slow["delay"])))
                if float(slow["delay"]) >= 15:
                    err = "Operation timed out after 15000 milliseconds with 0 bytes received"
            if fv.for_host("dns_failure", RELEASES_HOST):
                err = f"Could not resolve host: {RELEASES_HOST}"
            elif fv.for_host("egress_blocked", RELEASES_HOST):
                await self.fleet.clock.sleep(15)
                err = "Connection timed out after 15000 milliseconds"
            elif fv.for_host("tls_intercept", RELEASES_HOST):
                err = "SSL certificate problem: self-signed certificate in certificate chain"
            elif fv.get("licensing_5xx"):
                err = "The requested URL returned error: 503"
            elif not (slow and float(slow["delay"]) >= 15):
                return None
            if attempt < 2:
                await self.fleet.clock.sleep(2)
        return err

    def _cached_market(self, key: str) -> R | None:
        hit = self.market_cache.get(key)
        if hit and hit[0] > self.now():
            return hit[1]
        return None

    async def available_modules(self) -> R:
        v3 = self.generation == "v3"
        r = R(
            False,
            [],
            [],
            "getAvailableModules",
            f"{NS}Modules\\GetAvailableModulesAction::main" if v3 else f"{P_MOD}::callBack",
        )
        cached = self._cached_market("list")
        if cached is not None:
            return cached
        err = await self.releases()
        if err:
            r.messages = [texts.releases_unreachable(err)]
            return r
        mods = []
        for m in DEFAULT_CATALOGUE:
            mods.append(
                {
                    k: m[k]
                    for k in (
                        "uniqid",
                        "name",
                        "description",
                        "developer",
                        "version",
                        "min_pbx_version",
                        "commercial",
                        "release_id",
                        "size",
                    )
                }
                | {"promo_link": ""}
            )
        r.result = True
        r.data = {"modules": mods}
        self.market_cache["list"] = (self.now() + MARKET_CACHE_TTL, r)  # successes cached for an hour
        return r

    async def module_info(self, uniqid: str) -> R:
        v3 = self.generation == "v3"
        r = R(False, [], [], "getModuleInfo", f"{NS}Modules\\GetModuleInfoAction::main" if v3 else f"{P_MOD}::callBack")
        cached = self._cached_market("info:" + uniqid)
        if cached is not None:
            return cached
        err = await self.releases()
        if err:
            r.messages = [texts.releases_unreachable(err)]
            return r
        m = catalogue_entry(uniqid)
        if m is None:
            r.messages = [texts.WRONG_MODULE_INFO]
            return r
        r.result = True
        r.data = {
            "uniqid": m["uniqid"],
            "name": m["name"],
            "description": m["description"],
            "developer": m["developer"],
            "logotype": "",
            "downloads": 100,
            "commercial": m["commercial"],
            "screenshots": [],
            "eula": "",
            "promo_link": "",
            "lic_feature_id": m["lic_feature_id"],
            "lic_product_id": m["lic_product_id"],
            "releases": [
                {
                    "releaseID": m["release_id"],
                    "version": m["version"],
                    "size": m["size"],
                    "changelog": "",
                    "created": "2026-01-15 10:00:00",
                    "downloads": 100,
                    "require_version": m["min_pbx_version"],
                }
            ],
        }
        self.market_cache["info:" + uniqid] = (self.now() + MARKET_CACHE_TTL, r)
        return r

    # ------------------------------------------------------------------ system
    def db(self) -> sqlite3.Connection:
        """A real SQLite database mirroring this PBX's tables, rebuilt lazily after state changes."""
        if self._db is not None and self._db_version == self.version:
            return self._db
        if self._db is not None:
            self._db.close()
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("CREATE TABLE m_PbxSettings (key TEXT PRIMARY KEY, value TEXT)")
        db.execute(
            "CREATE TABLE m_PbxExtensionModules (id INTEGER PRIMARY KEY AUTOINCREMENT, uniqid TEXT, "
            "name TEXT, version TEXT, developer TEXT, supportemail TEXT, path TEXT, description TEXT, "
            "wiki_links TEXT, disabled TEXT DEFAULT '1', disableReason TEXT, disableReasonText TEXT)"
        )
        db.executemany(
            "INSERT INTO m_PbxSettings (key, value) VALUES (?, ?)",
            [(k, v) for k, v in self.settings.items() if k != "WebAdminPassword"]
            + [("WebAdminPassword", "$2y$10$" + "x" * 53)],
        )
        db.executemany(
            "INSERT INTO m_PbxExtensionModules ("
            + ",".join(MODULE_COLUMNS[1:])
            + ") VALUES ("
            + ",".join("?" * (len(MODULE_COLUMNS) - 1))
            + ")",
            [tuple(m[c] for c in MODULE_COLUMNS[1:]) for m in self.modules],
        )
        db.commit()
        db.execute("PRAGMA query_only = ON")
        self._db, self._db_version = db, self.version
        return db

    def close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def execute_sql(self, data: dict[str, Any]) -> R:
        r = R(False, [], [], "executeSqlRequest", proc("System\\ExecuteSqlRequestAction"))
        query = str(data.get("query") or "").strip()
        database = str(data.get("database") or "main")
        if not query:
            r.messages = {"error": ["Query is required"]}
            r.http_code = 400
            return r
        if not is_select(query):
            r.messages = {"error": [texts.SQL_ONLY_SELECT]}
            return r
        if database != "main":
            r.messages = {"error": [f"SQLSTATE[HY000] [14] unable to open database file: {database}"]}
            r.http_code = 500
            return r
        try:
            cur = self.db().execute(query)
            rows = [dict(row) for row in cur.fetchall()]
        except sqlite3.Error as e:
            r.messages = {"error": [f"SQLSTATE[HY000]: General error: {e}"]}
            r.http_code = 500
            return r
        r.result = True
        r.data = {"query": query, "database": database, "rows": rows, "rowCount": len(rows), "affectedRows": 0}
        return r

    async def execute_bash(self, data: dict[str, Any]) -> R:
        r = R(False, [], [], "executeBashCommand", proc("System\\ExecuteBashCommandAction"))
        command = str(data.get("command") or "")
        try:
            timeout = int(data.get("timeout") or 30)
        except (TypeError, ValueError):
            timeout = 30
        if not command:
            r.messages = {"error": ["Command is required"]}
            r.http_code = 400
            return r
        probe = parse_probe(command)
        if probe is None:
            r.messages = {"error": [texts.PROBE_REFUSED]}
            return r
        _port, ptimeout, hosts = probe  # the emulated licensing hosts answer on any port
        lines = []
        fv = self.fault_view
        for host in hosts:
            h = host.lower()
            if fv.for_host("dns_failure", h) or h not in LICENSING_HOSTS:
                lines.append((host, 6, "000", f"Could not resolve host: {host}"))
            elif fv.for_host("egress_blocked", h):
                await self.fleet.clock.sleep(ptimeout)
                lines.append((host, 28, "000", f"Connection timed out after {ptimeout * 1000} milliseconds"))
            elif fv.for_host("tls_intercept", h):
                lines.append((host, 60, "000", "SSL certificate problem: self-signed certificate in certificate chain"))
            elif fv.get("licensing_5xx"):
                lines.append((host, 0, "503", ""))
            else:
                lines.append((host, 0, "200", ""))
        output = "".join(f"MIKOPBX-PROBE\t{h}\t{c}\t{s}\t{t}\n" for h, c, s, t in lines)
        r.result = True
        r.data = {"command": command, "output": output, "exitCode": 0, "timeout": timeout}
        return r

    async def sysinfo(self) -> R:
        await self.fleet.clock.sleep(2)  # the real report takes several seconds
        r = R(True, function="getInfo", processor=proc("Sysinfo\\GetInfoAction"))
        content = sysinfo_text(self)
        r.data = (
            {"content": content} if self.generation == "v3" else {"filename": "/tmp/SystemInfo.txt", "content": content}
        )
        return r

    async def hypervisor(self) -> R:
        v3 = self.generation == "v3"
        data: dict[str, Any] = {"Hypervisor": "KVM"}
        if v3:
            data |= {"environment_type": "virtual", "cpu_architecture": "x86_64"}
        return R(True, data, [], "getHypervisorInfo", proc("Sysinfo\\GetHypervisorInfoAction"), 200 if v3 else None)

    async def dmi(self) -> R:
        v3 = self.generation == "v3"
        data: dict[str, Any] = {"DMI": "QEMU Standard PC (Q35 + ICH9, 2009)"}
        if v3:
            data |= {"environment_type": "virtual", "cpu_architecture": "x86_64"}
        return R(True, data, [], "getDMIInfo", proc("Sysinfo\\GetDMIInfoAction"), 200 if v3 else None)

    async def external_ip(self) -> R:
        """2026 asks checkip.amazonaws.com (3 s), 2024 ifconfig.me (2 s); always HTTP 200 on v3."""
        v3 = self.generation == "v3"
        host, limit = ("checkip.amazonaws.com", 3.0) if v3 else ("ifconfig.me", 2.0)
        r = R(False, [], [], "getExternalIpInfo", proc("Sysinfo\\GetExternalIpInfoAction"), 200 if v3 else None)
        fv = self.fault_view
        if fv.for_host("egress_blocked", host):
            await self.fleet.clock.sleep(limit)
        elif not (fv.for_host("dns_failure", host) or fv.for_host("tls_intercept", host)):
            r.result = True
            r.data = {"ip": f"203.0.113.{1 + int(self.machine_id[:4], 16) % 250}"}
            return r
        if v3:
            r.messages = ["Error format data "]
        else:
            r.result = True  # 2024 does not validate the body: an empty answer comes back as the ip
            r.data = {"ip": ""}
        return r

    async def advice(self) -> R:
        """advice:getList — the connectivity advice checks https://www.google.com/ (5 s)."""
        v3 = self.generation == "v3"
        fv = self.fault_view
        host = "www.google.com"
        advice: dict[str, Any] = {}
        if fv.for_host("egress_blocked", host):
            await self.fleet.clock.sleep(5)
            advice["warning"] = [{"messageTpl": "adv_ProblemWithInternetConnection", "messageParams": []}]
        elif fv.for_host("dns_failure", host) or fv.for_host("tls_intercept", host):
            advice["warning"] = [{"messageTpl": "adv_ProblemWithInternetConnection", "messageParams": []}]
        return R(
            True,
            {"advice": advice},
            [],
            "getList",
            proc("Advice\\GetAdviceListAction") if v3 else f"{NS}AdviceProcessor::callBack",
        )

    def mac(self) -> str:
        h = self.machine_id
        return "02:" + ":".join(h[i : i + 2] for i in range(0, 10, 2))

    async def network_config(self) -> R:
        r = R(True, function="getConfig", processor=proc("Network\\GetConfigAction"))
        r.data = {
            "interfaces": [
                {
                    "id": "1",
                    "interface": "eth0",
                    "name": "LAN",
                    "hostname": self.name,
                    "domain": "",
                    "ipaddr": "127.0.0.1",
                    "subnet": "24",
                    "gateway": "127.0.0.254",
                    "primarydns": "127.0.0.53",
                    "secondarydns": "",
                    "dhcp": "0",
                    "internet": "1",
                    "disabled": "0",
                    "vlanid": "0",
                    "mac": self.mac(),
                }
            ],
            "template": {},
            "internetInterfaceId": "1",
        }
        return r

    # ------------------------------------------------------------------ admin HTML
    def admin_modules_page(self) -> str:
        rows = []
        for m in self.modules:
            enabled = m["disabled"] == "0"
            checked = ' checked="checked"' if enabled else ""
            icon = ""
            if m["disabled"] == "1" and m["disableReason"] == "DisabledByLicense":
                icon = (
                    f'<span class="licence-problem" data-content="" data-variation="wide" data-html="'
                    f'{html.escape(m["disableReasonText"], quote=True)}"><i class="icons">'
                    '<i class="big red dont icon"></i><i class="key icon"></i></i></span>'
                )
            elif m["disabled"] == "1" and m["disableReason"] == "DisabledByException":
                icon = (
                    f'<span class="module-problem" data-html="{html.escape(m["disableReasonText"], quote=True)}">'
                    '<i class="red bug icon"></i></span>'
                )
            elif m["disabled"] == "1" and m["disableReason"] == "DisabledByCrashLoop":
                icon = (
                    f'<span class="module-problem" data-html="{html.escape(m["disableReasonText"], quote=True)}">'
                    '<i class="red redo icon"></i></span>'
                )
            rows.append(
                f'<tr class="module-row" data-id="{html.escape(m["uniqid"])}" '
                f'data-version="{html.escape(m["version"])}">\n'
                f'  <td class="collapsing"><div class="ui toggle checkbox" data-value="{html.escape(m["uniqid"])}">'
                f'<input type="checkbox"{checked} name="{html.escape(m["uniqid"])}"/><label></label></div></td>\n'
                f'  <td>{icon}<span class="module-name">Breadcrumb{html.escape(m["uniqid"])}</span><br>'
                f'<span class="features">{html.escape(m["description"])}</span></td>\n'
                f"  <td>{html.escape(m['developer'])}</td>\n"
                f'  <td class="center aligned version">{html.escape(m["version"])}</td>\n'
                "</tr>"
            )
        body = (
            '<table class="ui selectable compact unstackable table" id="installed-modules-table">\n'
            "<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
        )
        return admin_layout(self, "Extension modules", body, logged_in=True)


SELECT_RE = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*\(?\s*(select|with)\b", re.IGNORECASE | re.DOTALL)


def is_select(query: str) -> bool:
    return bool(SELECT_RE.match(query))


PROBE_MARKER = "mikopbx-probe-v1"
HOST_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*$"
)


def parse_probe(command: str) -> tuple[int, int, list[str]] | None:
    """Recognise ``sh -c '<script>' mikopbx-probe-v1 <port> <timeout> <host>...`` (design §5)."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if len(argv) < 6 or argv[0] not in ("sh", "/bin/sh") or argv[1] != "-c" or argv[3] != PROBE_MARKER:
        return None
    try:
        port, timeout = int(argv[4]), int(argv[5])
    except ValueError:
        return None
    hosts = argv[6:]
    if not hosts or not all(HOST_RE.match(h) for h in hosts):
        return None
    return port, timeout, hosts


def _section(title: str) -> str:
    width = 78
    pad = width - len(title) - 2
    return "─" * (pad // 2) + f" {title} " + "─" * (pad - pad // 2)


def sysinfo_text(p: PBX) -> str:
    now = p.now()
    parts = [
        _section("PBXVersion"),
        p.settings["PBXVersion"],
        "",
        _section("Environment"),
        "Machine hardware type: Virtual machine",
        "Hypervisor: KVM",
        "DMI: QEMU Standard PC (Q35 + ICH9, 2009)",
        "",
        _section("Date"),
        iso(now),
        "",
        _section("Uptime"),
        " 10:00:00 up 3 days,  load average: 0.05, 0.03, 0.01",
        "",
        _section("CPU load"),
        "%Cpu(s):  1.0 us,  0.5 sy, 98.5 id",
        "",
        _section("Memory"),
        "Mem: 2048 MB total, 1024 MB free",
        "",
        _section("Storage"),
        "/dev/sda1  20G  3.1G  16G  17% /storage/usbdisk1",
        "",
        _section("ifconfig"),
        f"eth0: inet 127.0.0.1  ether {p.mac()}",
        "",
        _section("OS Name"),
        f"Linux {p.name} 6.1.0 #1 SMP x86_64 GNU/Linux",
        "",
    ]
    return "\n".join(parts) + "\n"


def admin_layout(p: PBX, title: str, body: str, *, logged_in: bool) -> str:
    lic = p.settings.get("PBXLicense", "") if logged_in else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)} | MikoPBX</title>\n"
        '<script type="text/javascript">\n'
        f"    var globalPBXLicense = '{lic}';\n"
        f"    var globalPBXVersion = '{p.settings['PBXVersion']}';\n"
        "    var globalWebAdminLanguage = 'en';\n"
        '</script>\n</head>\n<body>\n<div id="main-content-container">\n'
        f"{body}\n</div>\n</body>\n</html>\n"
    )
