"""Shared helpers for the emulator fidelity suite.

Every fidelity test talks to the emulator the way a real client talks to a real MikoPBX: over
HTTPS with ``requests``, verifying the emulator CA, with the credentials from the inventory.
The control endpoint (plain HTTP on 127.0.0.1) is only used to arrange a situation (seed a key,
inject a fault, move the clock) and to look at state a real PBX keeps to itself.

Fleets are started through ``mikopbx_emulator.harness.Fleet`` and are module scoped: each test
module declares its fleet with :func:`fleet_fixture`; tests must not depend on each other's order
(pytest-xdist may spread one module over two workers, each with its own fleet).

Rate limiter: the v3 nginx limiter (180 requests/min per client, §9) is checked by its own tests on a fleet of
its own; the other fleets switch it off (``rate_limit=False``, like MikoPBX's own test-suite does with
PBXRateLimitEnabled=0), because every test shares one client address and a fast machine would trip it.

Time: the emulator's clock runs ``1 / time_scale`` times faster than real time.  Modules that
check expiries pick a scale large enough that the real time a test takes is small against the
emulated margins, and move the clock explicitly with :meth:`Control.advance`.
"""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

KEY_ALPHABET = string.ascii_uppercase + string.digits

# Literal strings the reference quotes verbatim (§3, §4, §5.2, §11.8).
NOT_AUTHENTICATED = "The user isn't authenticated."
WORKER_TIMEOUT_V3 = "Request timeout or worker not responding"
LEGACY_500 = "500 (Internal Server Error) "
LEGACY_404 = "404 (Not Found)"
QUEUE_FULL = "Service temporarily unavailable, please retry later"
FEATURE_IDS_EMPTY = "The feature id or product id is empty."
NOT_AUTHORIZED_XHR = "This user is not authorized"
MODULES_PROCESSOR = "MikoPBX\\PBXCoreREST\\Lib\\ModulesManagementProcessor"

PROBE_MARKER = "mikopbx-probe-v1"
# Our own probe body (the emulator recognises the probe by its marker, §5 of the design).
PROBE_SCRIPT = (
    'port="$1"; t="$2"; shift 2; for h in "$@"; do '
    'out=$(curl -sS -o /dev/null -w "%{http_code}" --connect-timeout "$t" -m "$t" "https://$h:$port/" 2>/tmp/e); '
    'rc=$?; printf "MIKOPBX-PROBE\\t%s\\t%s\\t%s\\t%s\\n" "$h" "$rc" "${out:-000}" "$(head -c 200 /tmp/e)"; done'
)
LICENSING_HOSTS = ("lic.mikopbx.com", "releases.mikopbx.com")


# --------------------------------------------------------------------------------------------
# small utilities


def random_key() -> str:
    """A well-formed licence key (28 chars) that no company owns."""
    return "MIKO-" + "-".join("".join(secrets.choice(KEY_ALPHABET) for _n in range(5)) for _n in range(4))


def random_coupon() -> str:
    return "MIKOUPD-" + "-".join("".join(secrets.choice(KEY_ALPHABET) for _n in range(5)) for _n in range(4))


def unique_email(tag: str = "t") -> str:
    return f"{tag}-{secrets.token_hex(6)}@example.com"


def trial_fields(company: str | None = None, email: str | None = None) -> dict[str, str]:
    return {
        "companyname": company or f"Example {secrets.token_hex(4)} LLC",
        "email": email or unique_email(),
        "contact": "Jane Doe",
        "telefone": "+1 000 000 0000",
        "inn": "1234567890",
    }


def body(resp: requests.Response) -> Any:
    """JSON body, or None when the body is not JSON."""
    try:
        return resp.json()
    except ValueError:
        return None


def describe(resp: requests.Response, sent: Any = None) -> str:
    """One line for assertion messages: request, input, answer."""
    req = resp.request
    text = resp.text
    if len(text) > 600:
        text = text[:600] + "…"
    inp = f" input={sent!r}" if sent is not None else ""
    return f"{req.method} {req.path_url}{inp} -> HTTP {resp.status_code} {text!r}"


def expect(resp: requests.Response, status: int, ref: str, sent: Any = None) -> Any:
    """Assert the HTTP status, return the decoded JSON body (or None)."""
    assert resp.status_code == status, f"expected HTTP {status} per reference {ref}; got {describe(resp, sent)}"
    return body(resp)


def jwt_payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    part += "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(part))


def jwt_header(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    part += "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(part))


def messages_of(data: Any, kind: str) -> list[Any]:
    """messages[kind] as a list ([] when absent); tolerates the list/str quirks of §4."""
    if not isinstance(data, dict):
        return []
    msgs = data.get("messages")
    if not isinstance(msgs, dict):
        return []
    val = msgs.get(kind, [])
    if isinstance(val, str):
        return [val]
    return list(val)


def probe_command(hosts: list[str], port: int = 443, timeout: int = 5) -> str:
    args = " ".join(shlex.quote(h) for h in hosts)
    return f"sh -c {shlex.quote(PROBE_SCRIPT)} {PROBE_MARKER} {int(port)} {int(timeout)} {args}"


def parse_probe(output: str) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[0] == "MIKOPBX-PROBE":
            rows[parts[1]] = {"exit": parts[2], "http": parts[3], "error": parts[4] if len(parts) > 4 else ""}
    return rows


# --------------------------------------------------------------------------------------------
# control endpoint


class Control:
    """The emulator's control API (design.md §2), called with plain requests."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.s = requests.Session()
        self.s.trust_env = False

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        resp = self.s.request(method, self.url + path, json=payload, timeout=60)
        assert resp.status_code < 300, f"control {method} {path} {payload!r} failed: {resp.status_code} {resp.text}"
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def fleet(self) -> list[dict[str, Any]]:
        return self._call("GET", "/control/fleet")

    def state(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/control/pbx/{name}/state")

    def license_key(self, name: str) -> str:
        return self.state(name)["settings"].get("PBXLicense", "")

    def machine_id(self, name: str) -> str:
        return self.state(name)["machine_id"]

    def modules(self, name: str) -> dict[str, dict[str, Any]]:
        return {row["uniqid"]: row for row in self.state(name)["modules"]}

    def requests_log(self, name: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/control/pbx/{name}/requests")

    def clear_requests(self, name: str) -> None:
        self._call("DELETE", f"/control/pbx/{name}/requests")

    def summary(self) -> dict[str, Any]:
        return self._call("GET", "/control/requests/summary")

    def add_fault(self, name: str | None, fault: str, **params: Any) -> None:
        path = f"/control/pbx/{name}/faults" if name else "/control/faults"
        self._call("POST", path, {"name": fault, **params})

    def clear_faults(self, name: str | None = None) -> None:
        path = f"/control/pbx/{name}/faults" if name else "/control/faults"
        self._call("DELETE", path)

    def set_license_key(self, name: str, key: str, bind: bool = True) -> None:
        self._call("PUT", f"/control/pbx/{name}/license-key", {"key": key, "bind": bind})

    def set_modules(self, name: str, rows: list[dict[str, Any]]) -> None:
        self._call("PUT", f"/control/pbx/{name}/modules", rows)

    def snapshot(self, name: str) -> str:
        return self._call("POST", f"/control/pbx/{name}/snapshot")["snapshot"]

    def restore(self, name: str, snapshot: str, new_machine: bool = False) -> Any:
        return self._call("POST", f"/control/pbx/{name}/restore", {"snapshot": snapshot, "new_machine": new_machine})

    def license_check(self, name: str) -> Any:
        return self._call("POST", f"/control/pbx/{name}/license-check")

    def create_company(self, **fields: Any) -> str:
        fields.setdefault("companyname", f"Company {secrets.token_hex(4)}")
        fields.setdefault("email", unique_email("co"))
        fields.setdefault("contact", "John Roe")
        return self._call("POST", "/control/licensing/companies", fields)["key"]

    def seats(self, key: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/control/cabinet/keys/{key}/seats")

    def free_seat(self, key: str, machine_id: str) -> None:
        self._call("DELETE", f"/control/cabinet/keys/{key}/seats/{machine_id}")

    def advance(self, seconds: float) -> None:
        self._call("POST", "/control/clock/advance", {"seconds": seconds})


# --------------------------------------------------------------------------------------------
# PBX clients


@dataclass
class Pbx:
    name: str
    url: str
    generation: str
    username: str
    password: str
    api_key: str | None
    ca: str
    _session: requests.Session | None = field(default=None, repr=False)

    # ---- plain sessions ------------------------------------------------------------------
    def anon(self) -> requests.Session:
        """A session with no credentials at all (TLS verified against the emulator CA)."""
        s = requests.Session()
        # trust_env off: REQUESTS_CA_BUNDLE in the environment would otherwise override session.verify, and no
        # proxy may ever sit between the tests and the loopback listeners.
        s.trust_env = False
        s.verify = self.ca
        return s

    def bearer(self, token: str | None = None) -> requests.Session:
        s = self.anon()
        s.headers["Authorization"] = f"Bearer {token or self.api_key}"
        return s

    # ---- v3 auth -------------------------------------------------------------------------
    def v3_login(
        self, s: requests.Session | None = None, password: str | None = None, **extra: Any
    ) -> requests.Response:
        s = s or self.anon()
        payload = {"login": self.username, "password": self.password if password is None else password, **extra}
        return s.post(self.url + "/pbxcore/api/v3/auth:login", json=payload, timeout=30)

    def jwt(self) -> str:
        resp = self.v3_login()
        assert resp.status_code == 200, f"v3 login failed on {self.name}: {describe(resp)}"
        return resp.json()["data"]["accessToken"]

    # ---- legacy auth ---------------------------------------------------------------------
    def legacy_login(self, s: requests.Session | None = None, password: str | None = None) -> requests.Response:
        s = s or self.anon()
        return s.post(
            self.url + "/admin-cabinet/session/start",
            data={"login": self.username, "password": self.password if password is None else password},
            headers={"X-Requested-With": "XMLHttpRequest"},
            timeout=30,
        )

    def legacy_session(self) -> requests.Session:
        s = self.anon()
        resp = self.legacy_login(s)
        data = body(resp)
        assert resp.status_code == 200 and isinstance(data, dict) and data.get("success") is True, (
            f"legacy login failed on {self.name}: {describe(resp)}"
        )
        return s

    # ---- authenticated calls (API key on v3, cached admin session on legacy) --------------
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = self.bearer() if self.generation == "v3" else self.legacy_session()
        return self._session

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 60)
        resp = self.session().request(method, self.url + path, **kw)
        if resp.status_code == 401 and self.generation == "legacy":
            # the emulated session expired (the clock runs fast): log in again once
            self._session = None
            resp = self.session().request(method, self.url + path, **kw)
        return resp

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    # ---- licence calls per generation (§5.1) ----------------------------------------------
    def lic_path(self, action: str) -> str:
        if self.generation == "v3":
            return f"/pbxcore/api/v3/license:{action}"
        return f"/pbxcore/api/license/{action}"

    def lic_info(self) -> requests.Response:
        return self.get(self.lic_path("getLicenseInfo"))

    def lic_request(self, data: dict[str, Any]) -> requests.Response:
        """processUserRequest: JSON on v3, form on legacy (legacy ignores JSON bodies, §5.1)."""
        if self.generation == "v3":
            return self.post(self.lic_path("processUserRequest"), json=data)
        return self.post(self.lic_path("processUserRequest"), data=data)

    def lic_reset(self) -> requests.Response:
        return self.get(self.lic_path("resetKey"))

    # ---- modules ------------------------------------------------------------------------
    def module_enable(self, uniqid: str) -> requests.Response:
        if self.generation == "v3":
            return self.post(f"/pbxcore/api/v3/modules/{uniqid}:enable", json={})
        return self.post("/pbxcore/api/modules/core/enableModule", data={"uniqid": uniqid})

    def module_disable(self, uniqid: str, reason: str, reason_text: str = "") -> requests.Response:
        if self.generation == "v3":
            return self.post(
                f"/pbxcore/api/v3/modules/{uniqid}:disable", json={"reason": reason, "reasonText": reason_text}
            )
        return self.post(
            "/pbxcore/api/modules/core/disableModule",
            data={"uniqid": uniqid, "reason": reason, "reasonText": reason_text},
        )

    def sql(self, query: str) -> requests.Response:
        return self.post("/pbxcore/api/v3/system:executeSqlRequest", json={"query": query, "database": "main"})

    def bash(self, command: str, timeout: int = 30) -> requests.Response:
        return self.post("/pbxcore/api/v3/system:executeBashCommand", json={"command": command, "timeout": timeout})


class FleetView:
    """A started fleet plus the helpers the tests need."""

    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet
        self.inventory_path = Path(fleet.inventory_path)
        self.inventory = yaml.safe_load(self.inventory_path.read_text(encoding="utf-8"))
        gvars = self.inventory["all"]["vars"]
        self.ca = gvars["mikopbx_ca_path"]
        self.control = Control(gvars["mikopbx_emulator_control_url"])
        self.hostvars: dict[str, dict[str, Any]] = self.inventory["all"]["hosts"]
        self._pbx: dict[str, Pbx] = {}

    def pbx(self, name: str) -> Pbx:
        if name not in self._pbx:
            hv = self.hostvars[name]
            self._pbx[name] = Pbx(
                name=name,
                url=hv["mikopbx_url"].rstrip("/"),
                generation=hv["mikopbx_generation"],
                username=hv.get("mikopbx_username", "admin"),
                password=hv["mikopbx_password"],
                api_key=hv.get("mikopbx_api_key"),
                ca=self.ca,
            )
        return self._pbx[name]

    def names(self, generation: str | None = None) -> list[str]:
        return sorted(
            n for n, hv in self.hostvars.items() if generation is None or hv["mikopbx_generation"] == generation
        )


def start_fleet(tmp_dir: Path, count: int, generation: str, time_scale: float, **kw: Any) -> Any:
    from mikopbx_emulator.harness import Fleet

    return Fleet.start(count=count, generation=generation, state_dir=tmp_dir, time_scale=time_scale, **kw)


def fleet_fixture(count: int, generation: str, *, time_scale: float, name: str = "fleet", **kw: Any):
    """A module-scoped fixture ``name`` yielding a :class:`FleetView` of a fresh fleet."""

    @pytest.fixture(scope="module", name=name)
    def _fixture(tmp_path_factory: pytest.TempPathFactory):
        state_dir = tmp_path_factory.mktemp(f"{name}-state")
        fleet = start_fleet(state_dir, count, generation, time_scale, **kw)
        try:
            yield FleetView(fleet)
        finally:
            fleet.stop()

    return _fixture


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# Module rows for PUT /control/pbx/{name}/modules (design.md §2).
def module_row(
    uniqid: str,
    *,
    disabled: bool = False,
    reason: str = "",
    text: str = "",
    feature: int = 0,
    product: int = 0,
    version: str = "1.0.0",
) -> dict[str, Any]:
    return {
        "uniqid": uniqid,
        "name": uniqid,
        "version": version,
        "disabled": "1" if disabled else "0",
        "disableReason": reason,
        "disableReasonText": text,
        "lic_feature_id": feature,
        "lic_product_id": product,
    }
