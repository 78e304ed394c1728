# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MikoPBX REST API client shared by every module of the collection.

One :class:`MikoPBXClient` per module run and PBX: one ``requests.Session`` (cookies, connection
reuse, proxies from the environment), TLS options applied to every request, authentication for
both API generations, bounded retries for requests that are safe to repeat, and classified errors
(:class:`MikoPBXError`) that never contain a secret.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import re
import stat
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ansible_collections.mikopbx.marketplace.plugins.module_utils.envelope import ApiResult, parse_response
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError, mask_text
from ansible_collections.mikopbx.marketplace.plugins.module_utils.licence import (
    LICENSING_HOSTS_HINT,
    licence_code_info,
    licence_error,
)

try:
    import requests
    import requests.auth
    import requests.exceptions

    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR: str | None = None
    _AuthBase: Any = requests.auth.AuthBase
except ImportError:  # pragma: no cover - exercised through missing_required_lib
    requests = None  # type: ignore[assignment]
    _AuthBase = object
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

__all__ = [
    "ApiResult",
    "HAS_REQUESTS",
    "MikoPBXClient",
    "MikoPBXError",
    "OPERATIONS",
    "REQUESTS_IMPORT_ERROR",
]

GENERATIONS = ("v3", "legacy")
V3_ROOT = "/pbxcore/api/v3/"
LEGACY_ROOT = "/pbxcore/api/"
LEGACY_LOGIN_PATH = "/admin-cabinet/session/start"
LEGACY_MODULES_PAGE = "/admin-cabinet/pbx-extension-modules/index"
SETTINGS_KEYS = ("PBXLicense", "PBXVersion", "Name")
SETTINGS_SQL = "SELECT key, value FROM m_PbxSettings WHERE key IN ('PBXLicense','PBXVersion','Name')"

# Licence-library conditions that mean "the PBX could not talk to the licensing service".
LICENSING_CONDITIONS = ("no_answer", "dns", "tls", "upstream")
WORKER_TIMEOUT_TEXT = "request timeout or worker not responding"
DB_LOCKED_TEXT = "database is locked"

# Request fields whose values are secrets wherever they appear.
SECRET_FIELDS = ("licKey", "coupon", "password", "PBXLicense", "accessToken", "key")
SECRET_COOKIES = ("PHPSESSID", "refreshToken", "random_token")
_KEY_IN_TEXT_RE = re.compile(r"\bMIKO(?:UPD)?-[A-Z0-9]{5}(?:-[A-Z0-9]{5}){3}\b")
_SELECT_RE = re.compile(r"^\s*SELECT\b", re.IGNORECASE)
_WRITE_SQL_RE = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE|DROP|ALTER|CREATE|ATTACH|DETACH|PRAGMA|VACUUM)\b", re.I)


@dataclass(frozen=True)
class Route:
    """Where a logical operation lives in one generation."""

    method: str
    path: str  # relative to the generation's API root; "{id}" is replaced by path_id
    id_field: str | None = None  # legacy: path_id travels in the body under this name
    safe: bool = True  # a read: may be repeated at transport level


@dataclass(frozen=True)
class Operation:
    name: str
    v3: Route | None
    legacy: Route | None


def _op(name: str, v3: Route | None, legacy: Route | None) -> tuple[str, Operation]:
    return name, Operation(name, v3, legacy)


OPERATIONS: dict[str, Operation] = dict(
    [
        _op("license.getLicenseInfo", Route("GET", "license:getLicenseInfo"), Route("GET", "license/getLicenseInfo")),
        _op(
            "license.processUserRequest",
            Route("POST", "license:processUserRequest", safe=False),
            Route("POST", "license/processUserRequest", safe=False),
        ),
        # resetKey is a GET that releases the seat: never repeated, forbidden in check mode.
        _op(
            "license.resetKey",
            Route("GET", "license:resetKey", safe=False),
            Route("GET", "license/resetKey", safe=False),
        ),
        _op("license.ping", Route("GET", "license:ping"), Route("GET", "license/ping")),
        _op("license.sendPBXMetrics", Route("GET", "license:sendPBXMetrics"), Route("GET", "license/sendPBXMetrics")),
        _op(
            "license.captureFeatureForProductId",
            Route("POST", "license:captureFeatureForProductId", safe=False),
            Route("POST", "license/captureFeatureForProductId", safe=False),
        ),
        _op("license.getMikoPBXFeatureStatus", None, Route("GET", "license/getMikoPBXFeatureStatus")),
        # SQL: safe only for a read-only SELECT (decided per call).
        _op("system.executeSqlRequest", Route("POST", "system:executeSqlRequest", safe=False), None),
        _op("system.executeBashCommand", Route("POST", "system:executeBashCommand", safe=False), None),
        _op("system.ping", Route("GET", "system:ping"), Route("GET", "system/ping")),
        _op("system.checkAuth", Route("GET", "system:checkAuth"), None),
        _op("sysinfo.getInfo", Route("GET", "sysinfo:getInfo"), Route("GET", "sysinfo/getInfo")),
        _op(
            "sysinfo.getExternalIpInfo",
            Route("GET", "sysinfo:getExternalIpInfo"),
            Route("GET", "sysinfo/getExternalIpInfo"),
        ),
        _op("network.getConfig", Route("GET", "network:getConfig"), None),
        _op("advice.getList", Route("GET", "advice:getList"), Route("GET", "advice/getList")),
        _op(
            "modules.getAvailableModules",
            Route("GET", "modules:getAvailableModules"),
            Route("GET", "modules/core/getAvailableModules"),
        ),
        _op(
            "modules.getModuleInfo",
            Route("GET", "modules/{id}:getModuleInfo"),
            Route("POST", "modules/core/getModuleInfo", id_field="uniqid"),
        ),
        _op(
            "modules.enable",
            Route("POST", "modules/{id}:enable", safe=False),
            Route("POST", "modules/core/enableModule", id_field="uniqid", safe=False),
        ),
        _op(
            "modules.disable",
            Route("POST", "modules/{id}:disable", safe=False),
            Route("POST", "modules/core/disableModule", id_field="uniqid", safe=False),
        ),
    ]
)


class LoginFailureMemo:
    """Failed logins remembered across module runs on this controller.

    Every task builds its own client, so "one failed login per client" alone would let a play of
    twenty tasks (with ``ignore_errors``) spend twenty failed logins on one PBX, enough for its
    fail2ban jail (2024.x bans for a day after five). A refused login is therefore written to a
    small file per PBX and user; for ``TTL`` seconds, later clients with the *same* password fail at
    once without contacting the PBX. A different password, or a successful login, clears it.

    The file holds no secret: the password is only compared through a salted PBKDF2 fingerprint.
    ``MIKOPBX_LOGIN_MEMO_DIR`` moves the directory; ``MIKOPBX_LOGIN_MEMO=0`` switches it off.
    """

    TTL = 600
    ITERATIONS = 100_000

    def __init__(self, directory: str | None = None) -> None:
        self.enabled = os.environ.get("MIKOPBX_LOGIN_MEMO", "1").lower() not in ("0", "false", "no", "off")
        default = os.path.join(tempfile.gettempdir(), "mikopbx-marketplace-logins-%s" % _uid())
        self.directory = directory or os.environ.get("MIKOPBX_LOGIN_MEMO_DIR") or default

    def path(self, url: str, username: str) -> str:
        name = hashlib.sha256(("%s\0%s" % (url, username)).encode("utf-8")).hexdigest()
        return os.path.join(self.directory, name + ".json")

    def _fingerprint(self, url: str, username: str, password: str) -> str:
        salt = ("mikopbx-login\0%s\0%s" % (url, username)).encode("utf-8")
        return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, self.ITERATIONS).hex()

    def recent(self, url: str, username: str, password: str) -> dict[str, Any] | None:
        """The remembered failure for these exact credentials, if it is recent enough."""
        if not self.enabled:
            return None
        try:
            with open(self.path(url, username), encoding="utf-8") as handle:
                entry = json.load(handle)
        except (OSError, ValueError):
            return None
        age = time.time() - float(entry.get("ts", 0))
        if not 0 <= age < float(entry.get("ttl", self.TTL)):
            return None
        if entry.get("fingerprint") != self._fingerprint(url, username, password):
            return None
        entry["age"] = int(age)
        return entry

    def record(self, url: str, username: str, password: str, err: MikoPBXError, ttl: float | None = None) -> None:
        if not self.enabled:
            return
        entry = {
            "ts": time.time(),
            "ttl": ttl or self.TTL,
            "fingerprint": self._fingerprint(url, username, password),
            "classification": err.classification,
            "status": err.status,
            "message": err.message,
        }
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            target = self.path(url, username)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle)
            os.replace(tmp, target)
        except OSError:
            pass

    def clear(self, url: str, username: str) -> None:
        if not self.enabled:
            return
        try:
            os.unlink(self.path(url, username))
        except OSError:
            pass


class SessionCache:
    """Login sessions reused across module runs on this controller.

    Every task builds its own client and would log in again. MikoPBX 2024.1 counts *every* login
    POST (successes included) against 10 per address and 5 minutes, so a play run twice in a row
    locks itself out; 2026.1 merely wastes a login per task. After a successful password login the
    session is therefore written to a private file, and later clients with the same URL, username
    and password start from it: legacy the ``PHPSESSID`` cookie (reused for ``LEGACY_TTL`` seconds
    after the login, well inside the PBX's 3600 s session lifetime, never extended by use), v3 the
    access token (until its ``exp`` minus ``V3_MARGIN``) and the ``refreshToken`` cookie (an
    expired access token is renewed with ``auth:refresh`` instead of a new login).

    The file name is a salted PBKDF2 fingerprint of URL, username and password; the file (mode 0600,
    in a 0700 directory, replaced atomically) holds session values, never the password. A file that
    cannot be read, is not ours or is malformed is ignored. The directory is
    ``MIKOPBX_SESSION_CACHE_DIR``, else ``sessions`` in the login memo's directory (which
    ``MIKOPBX_LOGIN_MEMO_DIR`` moves); ``MIKOPBX_SESSION_CACHE=0`` switches the cache off. API keys
    are never cached (they need no login).
    """

    LEGACY_TTL = 3000
    V3_MARGIN = 120
    V3_MAX_TTL = 3600
    REFRESH_TTL = 86400
    ITERATIONS = 100_000
    VERSION = 1

    def __init__(self, directory: str | None = None) -> None:
        self.enabled = os.environ.get("MIKOPBX_SESSION_CACHE", "1").lower() not in ("0", "false", "no", "off")
        self.directory = directory or os.environ.get("MIKOPBX_SESSION_CACHE_DIR") or ""
        # Under the login memo's directory (by default in the shared temp dir) that one must be ours too.
        self._in_memo_directory = not self.directory
        if not self.directory:
            self.directory = os.path.join(LoginFailureMemo().directory, "sessions")
        self._names: dict[tuple[str, str, str], str] = {}

    def path(self, url: str, username: str, password: str) -> str:
        key = (url, username, password)
        if key not in self._names:
            salt = ("mikopbx-session\0%s\0%s" % (url, username)).encode("utf-8")
            digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, self.ITERATIONS).hex()
            self._names[key] = "session-%s.json" % digest
        return os.path.join(self.directory, self._names[key])

    def load(self, url: str, username: str, password: str) -> dict[str, Any] | None:
        """The stored session for these exact credentials if it may still be valid, else None."""
        if not self.enabled:
            return None
        try:
            entry = self._read(self.path(url, username, password))
            return self._usable(entry, url)
        except Exception:  # a cache must never break a module run: anything odd means "no entry"
            return None

    def store(self, url: str, username: str, password: str, entry: dict[str, Any]) -> None:
        if not self.enabled:
            return
        entry = dict(entry, version=self.VERSION, url=url, ts=entry.get("ts") or time.time())
        tmp = None
        try:
            if not self._private_directory():
                return
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".session-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle)
            os.replace(tmp, self.path(url, username, password))
            tmp = None
        except OSError:
            pass
        finally:
            if tmp is not None:
                _unlink_quietly(tmp)

    def drop(self, url: str, username: str, password: str) -> None:
        if self.enabled:
            _unlink_quietly(self.path(url, username, password))

    def _private_directory(self) -> bool:
        """Create the directory 0700; refuse one that is a link or someone else's (or in theirs)."""
        # makedirs gives only the last level the mode: the parent (the login memo's) is made first.
        parent = os.path.dirname(os.path.abspath(self.directory))
        if self._in_memo_directory:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            if not _owned_by_us(os.lstat(parent)):
                return False
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode) or not _owned_by_us(info):
            return False
        if info.st_mode & 0o077:
            os.chmod(self.directory, 0o700)
        return True

    @staticmethod
    def _read(path: str) -> Any:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, encoding="utf-8") as handle:
            info = os.fstat(handle.fileno())
            # Only a private regular file of ours is trusted: anyone else could plant a session.
            if not stat.S_ISREG(info.st_mode) or not _owned_by_us(info) or info.st_mode & 0o077:
                return None
            return json.load(handle)

    def _usable(self, entry: Any, url: str) -> dict[str, Any] | None:
        if not isinstance(entry, dict) or entry.get("version") != self.VERSION or entry.get("url") != url:
            return None
        generation = entry.get("generation")
        cookies = entry.get("cookies")
        if generation not in GENERATIONS or not isinstance(cookies, dict):
            return None
        if not all(isinstance(c, dict) and isinstance(c.get("value"), str) for c in cookies.values()):
            return None
        now = time.time()
        age = now - float(entry["ts"])
        if age < 0:
            return None  # the clock went back: trust nothing

        if generation == "legacy":
            if age >= self.LEGACY_TTL or not cookies.get("PHPSESSID"):
                return None
            return entry

        token = entry.get("access_token")
        until = entry.get("access_until")
        if not isinstance(token, str) or not isinstance(until, (int, float)) or now >= until:
            entry["access_token"] = None
        refresh_fresh = cookies.get("refreshToken") and age < self.REFRESH_TTL
        if not entry["access_token"] and not refresh_fresh:
            return None
        if not refresh_fresh:
            cookies.pop("refreshToken", None)
        return entry


def _owned_by_us(info: os.stat_result) -> bool:
    getuid = getattr(os, "getuid", None)
    return getuid is None or info.st_uid == getuid()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _jwt_expiry(token: str) -> float | None:
    """``exp`` of a JWT, read from its payload without verifying it (only to decide reuse)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
    except (IndexError, ValueError, TypeError, UnicodeDecodeError):
        return None


def _uid() -> str:
    try:
        return str(os.getuid())
    except AttributeError:  # pragma: no cover - not POSIX
        return "user"


class _HeaderAuth(_AuthBase):
    """Sets our Authorization header, or none.

    Passing an explicit auth object keeps ``requests`` from looking up ``~/.netrc`` (which would
    replace the Bearer header) while ``trust_env`` still brings proxies from the environment.
    """

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __call__(self, request: Any) -> Any:
        if self.value:
            request.headers["Authorization"] = self.value
        else:
            request.headers.pop("Authorization", None)
        return request


class MikoPBXClient:
    """Client for one PBX. See docs/design.md §3 for the contract."""

    BACKOFF_BASE = 0.5
    BACKOFF_CAP = 8.0
    RETRY_AFTER_CAP = 30.0

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        validate_certs: bool = True,
        ca_path: str | None = None,
        timeout: float = 40,
        retries: int = 3,
        generation: str | None = "auto",
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not HAS_REQUESTS:
            raise MikoPBXError(
                "the Python library 'requests' is required",
                "unsupported",
                hint="install requests on the Ansible controller",
            )
        self.secrets: set[str] = set()
        self.secret_listeners: list[Callable[[str], None]] = []
        self.url = self._normalise_url(url)
        self.api_key = api_key or None
        self.username = username or None
        self.password = password
        self.validate_certs = validate_certs
        self.ca_path = ca_path or None
        self.timeout = timeout
        self.retries = max(int(retries or 0), 0)
        self.request_count = 0
        self.sleep = sleep or time.sleep

        for secret in (api_key, password):
            self.add_secret(secret)

        if generation in (None, "", "auto"):
            self._generation: str | None = None
        elif generation in GENERATIONS:
            self._generation = generation
        else:
            raise MikoPBXError("api_generation must be auto, v3 or legacy, got %r" % generation, "invalid_input")
        if self._generation is None and self.api_key:
            # API keys exist only in v3: no probe request is needed.
            self._generation = "v3"
        if self._generation == "legacy" and self.api_key and not self.username:
            raise MikoPBXError(
                "the legacy API (MikoPBX 2024.x) has no API keys",
                "invalid_input",
                url=self.url,
                hint="use username and password for this PBX, or api_generation: v3",
            )
        if not self.api_key and not (self.username and password):
            raise MikoPBXError(
                "no credentials: give api_key, or username and password",
                "invalid_input",
                url=self.url,
                hint="set api_key (MIKOPBX_API_KEY) or username/password",
            )

        if self.verify is False:
            # validate_certs: false is the operator's explicit choice; do not repeat urllib3's warning.
            _silence_insecure_warning()

        self.session = requests.Session()
        # Proxies from the environment are honoured; ~/.netrc is neutralised by _HeaderAuth.
        self.session.trust_env = True
        self.session.headers.update({"Accept": "application/json", "User-Agent": "ansible-mikopbx.marketplace"})

        self._access_token: str | None = None
        self._legacy_session = False
        self._login_failure: MikoPBXError | None = None
        self.login_memo = LoginFailureMemo()
        self.session_cache = SessionCache()
        self._session_checked = False  # the cache is consulted once per client
        self._session_from_cache = False  # the current session came from the cache, unconfirmed
        self._session_ts = 0.0  # when the current session was created by a login
        self._settings: dict[str, Any] | None = None
        self._pages: dict[str, str] = {}

    # ------------------------------------------------------------------ public helpers

    @property
    def verify(self) -> bool | str:
        """The ``verify`` argument of every request: the CA file/dir, else validate_certs."""
        if self.ca_path:
            return self.ca_path
        return bool(self.validate_certs)

    @property
    def generation(self) -> str:
        """``v3`` or ``legacy``; resolved once (option, api_key ⇒ v3, else by the login)."""
        if self._generation is None:
            self._authenticate()
        return self._generation or "v3"

    def add_secret(self, value: Any) -> None:
        """Remember a secret (masked in every error; pushed to the listeners, e.g. no_log_values)."""
        if value is None:
            return
        text = str(value)
        if not text.strip() or text in self.secrets:
            return
        self.secrets.add(text)
        for listener in self.secret_listeners:
            listener(text)

    def mask(self, value: Any) -> str:
        return mask_text(value, self.secrets)

    def call(
        self,
        op: str,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        path_id: str | None = None,
        allow_failure: bool = False,
        safe: bool | None = None,
    ) -> ApiResult:
        """Run a logical operation (``license.getLicenseInfo`` …) on this PBX's generation.

        ``safe`` overrides the operation's retry policy (True = may be repeated at transport level).
        Raises :class:`MikoPBXError` when the answer is not ok, unless ``allow_failure``.
        """
        operation = OPERATIONS.get(op)
        if operation is None:
            raise MikoPBXError("unknown operation %r" % op, "unsupported")
        generation = self.generation
        route = operation.v3 if generation == "v3" else operation.legacy
        if route is None:
            raise MikoPBXError(
                "%s is not available in the %s API generation" % (op, generation),
                "unsupported",
                url=self.url,
                hint="this check needs a MikoPBX of the other generation",
            )

        body = dict(data) if data else None
        path = route.path
        if "{id}" in path:
            if not path_id or not re.match(r"^[A-Za-z][A-Za-z0-9]*$", str(path_id)):
                raise MikoPBXError("%s needs a module id (letters and digits), got %r" % (op, path_id), "invalid_input")
            path = path.replace("{id}", str(path_id))
        elif route.id_field and path_id is not None:
            body = body or {}
            body[route.id_field] = path_id

        if safe is None:
            safe = route.safe
            if op == "system.executeSqlRequest":
                query = str((body or {}).get("query", ""))
                safe = bool(_SELECT_RE.match(query)) and not _WRITE_SQL_RE.search(query)

        root = V3_ROOT if generation == "v3" else LEGACY_ROOT
        return self.request(
            route.method, root + path, params=params, data=body, safe=safe, allow_failure=allow_failure, action=op
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        safe: bool | None = None,
        allow_failure: bool = False,
        action: str | None = None,
    ) -> ApiResult:
        """A raw REST call under ``/pbxcore/api/...`` (an extension of the contract for paths
        that have no logical operation). Bodies are JSON for v3 and form data for legacy."""
        method = method.upper()
        if safe is None:
            safe = method == "GET"
        self._authenticate()
        for secret_field in SECRET_FIELDS:
            if data and data.get(secret_field):
                self.add_secret(data[secret_field])

        result = self._authorised_request(method, path, params=params, data=data, safe=safe)
        result.method, result.path = method, path
        if not result.ok and not allow_failure:
            raise self.error_from_result(result, action or path, method=method, path=path)
        return result

    def admin_page(self, path: str) -> str:
        """An admin-cabinet HTML page with the session (legacy) or JWT (v3); cached per path."""
        if path in self._pages:
            return self._pages[path]
        self._authenticate()

        for attempt in (1, 2):
            response, result = self._send(
                "GET", path, safe=True, headers={"Accept": "text/html"}, bearer=self._bearer()
            )
            if self._page_needs_login(response) and attempt == 1 and self._reauthenticate():
                continue
            break

        if self._page_needs_login(response):
            raise MikoPBXError(
                "the PBX answered the admin page with its login form",
                "auth",
                method="GET",
                path=path,
                status=response.status_code,
                url=self.url,
                secrets=self.secrets,
            )
        if response.status_code != 200:
            raise self.error_from_result(result, path, method="GET", path=path)
        self._pages[path] = response.text
        return response.text

    def settings(self) -> dict[str, Any]:
        """``{"PBXLicense", "PBXVersion", "Name"}`` in one request; cached.

        v3: a read-only SQL SELECT; legacy: the globals of the admin modules page (the page text
        stays cached for module parsers, see :meth:`admin_page`).
        """
        if self._settings is not None:
            return dict(self._settings)

        values: dict[str, Any] = {k: None for k in SETTINGS_KEYS}
        if self.generation == "v3":
            result = self.call("system.executeSqlRequest", data={"query": SETTINGS_SQL, "database": "main"})
            rows = result.data.get("rows", []) if isinstance(result.data, dict) else []
            for row in rows or []:
                if isinstance(row, dict) and row.get("key") in values:
                    values[row["key"]] = row.get("value")
            # Present but absent rows mean the defaults (an empty key).
            if values["PBXLicense"] is None:
                values["PBXLicense"] = ""
        else:
            page = self.admin_page(LEGACY_MODULES_PAGE)
            values["PBXLicense"] = _js_global(page, "globalPBXLicense") or ""
            values["PBXVersion"] = _js_global(page, "globalPBXVersion")
            values["Name"] = _js_global(page, "globalPBXName")

        self.add_secret(values["PBXLicense"])
        self._settings = values
        return dict(values)

    def invalidate_settings(self) -> None:
        """Forget cached settings and pages (after a write that changes them)."""
        self._settings = None
        self._pages.clear()

    def error_from_result(
        self, result: ApiResult, action: str, *, method: str | None = None, path: str | None = None
    ) -> MikoPBXError:
        """Classify a failed answer into a :class:`MikoPBXError` with the fix."""
        method = method or result.method
        path = path or result.path
        status = result.status
        pbx = result.error_text()
        lower = pbx.lower()
        code = result.licence_code
        common: dict[str, Any] = dict(
            method=method, path=path, status=status, pbx_message=pbx or None, url=self.url, secrets=self.secrets
        )

        if status == 401:
            how = "API key" if self._api_key_active else "login session"
            return MikoPBXError("%s: the PBX did not accept the %s" % (action, how), "auth", **common)
        if status == 403:
            if "access denied" in lower and result.body_kind == "text":
                return MikoPBXError(
                    "%s: the PBX blocked this controller's address" % action,
                    "auth",
                    hint="unban the controller's address on the PBX (fail2ban / firewall) and check the credentials",
                    **common,
                )
            return MikoPBXError(
                "%s: access denied by the PBX" % action,
                "auth",
                hint="use an admin account or a full-permission API key",
                **common,
            )
        if status == 429:
            return MikoPBXError("%s: the PBX rate limit was hit" % action, "rate_limited", **common)
        if status == 404:
            return MikoPBXError("%s: the PBX has no such endpoint" % action, "not_found", **common)
        if status == 405 or "unknown action" in lower:
            return MikoPBXError("%s: not supported by this MikoPBX version" % action, "unsupported", **common)

        if WORKER_TIMEOUT_TEXT in lower:
            return MikoPBXError(
                "%s: the PBX API worker did not answer in time" % action,
                "timeout",
                hint="the PBX is busy or a licence call is slow: retry later or raise timeout",
                **common,
            )
        if isinstance(code, int):
            info = licence_code_info(code)
            meaning = info.meaning if info else "licence error"
            return licence_error(code, "%s: licence error %s (%s)" % (action, code, meaning), **common)
        licence_related = bool(result.messages.get("license")) or action.startswith("license.")
        queue_full = "temporarily unavailable" in lower
        if code in LICENSING_CONDITIONS or (licence_related and status in (502, 503) and not queue_full):
            return licence_error(
                code if code in LICENSING_CONDITIONS else "no_answer",
                "%s: the PBX could not reach the licensing service" % action,
                **common,
            )
        if status == 500 and self._generation == "legacy":
            return MikoPBXError(
                "%s: the PBX API worker did not answer in time" % action,
                "timeout",
                hint="the PBX is busy or a licence call is slow: retry later or raise timeout",
                **common,
            )
        if DB_LOCKED_TEXT in lower:
            return MikoPBXError(
                "%s: the PBX database was locked" % action,
                "server",
                hint="the PBX was busy writing: retry later",
                **common,
            )
        if status == 503:
            return MikoPBXError(
                "%s: the PBX API queue is full" % action,
                "server",
                hint="lower forks/throttle for this play and retry",
                **common,
            )
        if status == 400:
            return MikoPBXError("%s: the PBX rejected the request" % action, "invalid_input", **common)
        if licence_related and result.messages.get("license"):
            return MikoPBXError(
                "%s: the licensing service refused the request" % action, "server", hint=LICENSING_HOSTS_HINT, **common
            )
        if status is not None and 300 <= status < 400:
            return MikoPBXError(
                "%s: the PBX redirected the request" % action,
                "invalid_input",
                hint="use the https:// URL of the PBX (it redirects HTTP to HTTPS)",
                **common,
            )
        return MikoPBXError("%s: the PBX reported a failure" % action, "server", **common)

    def logout(self) -> None:
        """Drop the v3 refresh token on the PBX and the stored session (optional; both expire)."""
        self._forget_stored_session()
        if self._access_token:
            try:
                self._send("POST", V3_ROOT + "auth:logout", safe=False, bearer="Bearer " + self._access_token)
            except MikoPBXError:
                pass
        self._access_token = None

    # ------------------------------------------------------------------ authentication

    @property
    def _api_key_active(self) -> bool:
        # API keys exist only in v3; a legacy PBX given both uses the login.
        return bool(self.api_key) and self._generation == "v3"

    def _bearer(self) -> str | None:
        if self._api_key_active:
            return "Bearer " + self.api_key
        if self._access_token:
            return "Bearer " + self._access_token
        return None

    def _authenticate(self) -> None:
        """Make sure we are logged in, resolving the generation on the way."""
        if self._api_key_active:
            return
        if self._generation == "v3" and self._access_token:
            return
        if self._generation == "legacy" and self._legacy_session:
            return
        if self._resume_stored_session():
            return

        if self._generation in (None, "v3"):
            if self._login_v3(probe=self._generation is None):
                self._generation = "v3"
                return
            # v3 auth:login is not routed: a 2024.x PBX.
            self._generation = "legacy"
        self._login_legacy()

    def _check_login_allowed(self) -> None:
        # The PBX bans an address after a handful of failures: one failed login per run is all we spend.
        if self._login_failure is not None:
            raise self._login_failure

        # ... and across the tasks of a run: an earlier client was refused with these credentials.
        earlier = self.login_memo.recent(self.url, self.username or "", self.password or "")
        if earlier is not None:
            classification = earlier.get("classification") or "auth"
            # Nothing is sent now: no method or status of this attempt. The refusal's own status is history.
            then = " with HTTP %s" % earlier["status"] if earlier.get("status") else ""
            self._login_failure = MikoPBXError(
                "login as %r not attempted and no request sent: the PBX refused these credentials%s %s s ago (%s)"
                % (self.username, then, earlier["age"], earlier.get("message") or classification),
                classification if classification in ("auth", "rate_limited") else "auth",
                url=self.url,
                secrets=self.secrets,
                hint="fix username/password for this PBX; with the same password no login is tried for %d s "
                "after a refusal (the PBX bans addresses after repeated failures); to retry earlier, delete %s"
                % (
                    int(earlier.get("ttl") or LoginFailureMemo.TTL),
                    self.login_memo.path(self.url, self.username or ""),
                ),
            )
            raise self._login_failure

    def _login_v3(self, probe: bool) -> bool:
        self._check_login_allowed()
        response, result = self._send(
            "POST",
            V3_ROOT + "auth:login",
            json_body={"login": self.username, "password": self.password, "rememberMe": False},
            safe=False,
            login=True,
        )
        if probe and response.status_code == 404:
            return False
        if not result.ok:
            self._fail_login(result, V3_ROOT + "auth:login")

        data = result.data if isinstance(result.data, dict) else {}
        token = data.get("accessToken")
        if not token:
            self._fail_login(result, V3_ROOT + "auth:login", reason="the login answer carried no access token")
        self.add_secret(token)
        self._access_token = token
        self.login_memo.clear(self.url, self.username or "")
        self._session_ts = time.time()
        self._store_session("v3", data.get("expiresIn"))
        return True

    def _login_legacy(self) -> None:
        self._check_login_allowed()
        response, result = self._send(
            "POST",
            LEGACY_LOGIN_PATH,
            form={"login": self.username, "password": self.password},
            headers={"X-Requested-With": "XMLHttpRequest"},
            safe=False,
            login=True,
        )
        # The admin cabinet answers HTTP 200 with {"success": true|false}.
        if not result.ok or not isinstance(result.raw, dict):
            self._fail_login(result, LEGACY_LOGIN_PATH)
        if not self.session.cookies.get("PHPSESSID"):
            self._fail_login(result, LEGACY_LOGIN_PATH, reason="the login answer set no PHPSESSID session cookie")
        self._legacy_session = True
        self.login_memo.clear(self.url, self.username or "")
        self._session_ts = time.time()
        self._store_session("legacy")

    def _fail_login(self, result: ApiResult, path: str, reason: str | None = None) -> None:
        text = result.error_text().lower()
        common: dict[str, Any] = dict(
            method="POST",
            path=path,
            status=result.status,
            pbx_message=result.error_text() or None,
            url=self.url,
            secrets=self.secrets,
        )
        if result.status == 403 and result.body_kind == "text":
            err = self.error_from_result(result, "login", method="POST", path=path)
        elif result.status == 429 or "too many" in text:
            err = MikoPBXError(
                "login refused: too many login attempts on this PBX",
                "rate_limited",
                hint="wait for the PBX's lockout to expire (5-10 minutes) and fix the credentials; "
                "no further login is attempted in this run",
                **common,
            )
        elif result.status in (None, 200, 400, 401, 403, 422) and reason is None:
            err = MikoPBXError(
                "login as %r: credentials rejected" % self.username,
                "auth",
                hint="check username and password for this PBX (one failed login per run; "
                "the PBX bans addresses after repeated failures)",
                **common,
            )
        else:
            err = self.error_from_result(result, "login", method="POST", path=path)
            if reason:
                err = MikoPBXError("login failed: %s" % reason, err.classification, **common)
        self._login_failure = err
        self._access_token = None
        self._legacy_session = False
        self._forget_stored_session()
        if err.classification == "auth":
            self.login_memo.record(self.url, self.username or "", self.password or "", err)
        elif err.classification == "rate_limited":
            # A lockout ends by itself: remember it only as long as the PBX asks (60-600 s, default 300).
            wait = _retry_after_seconds(result.retry_after) or 300.0
            self.login_memo.record(
                self.url, self.username or "", self.password or "", err, ttl=min(600.0, max(60.0, wait))
            )
        raise err

    def _reauthenticate(self) -> bool:
        """After a 401: one refresh with the cookie (v3), else one new login. True if renewed."""
        if self._api_key_active or not (self.username and self.password):
            return False
        if self._session_from_cache:
            # A stored session the PBX no longer accepts (it restarted, someone logged out): forget
            # it. Renewing it below is ordinary, not a failed login, and is tried once like any renewal.
            self._forget_stored_session()
            if self._generation == "legacy":
                self._drop_cookie("PHPSESSID")
        if self._generation == "v3":
            self._access_token = None
            if self.session.cookies.get("refreshToken") and self._refresh_v3():
                return True
            self._login_v3(probe=False)
            return True
        self._legacy_session = False
        self._login_legacy()
        return True

    def _refresh_v3(self) -> bool:
        """One ``auth:refresh`` with the refreshToken cookie; True with a new access token."""
        response, result = self._send("POST", V3_ROOT + "auth:refresh", safe=False, login=True)
        data = result.data if result.ok and isinstance(result.data, dict) else {}
        token = data.get("accessToken")
        if token:
            self.add_secret(token)
            self._access_token = token
            self._store_session("v3", data.get("expiresIn"))
            return True
        if response.status_code == 429:
            raise self.error_from_result(result, "token refresh", method="POST", path=V3_ROOT + "auth:refresh")
        return False

    # ------------------------------------------------------------------ sessions across tasks

    @property
    def _session_cacheable(self) -> bool:
        # API keys need no login; with a key and a login (legacy) nothing is cached either.
        return self.session_cache.enabled and not self.api_key and bool(self.username and self.password)

    def _resume_stored_session(self) -> bool:
        """Start from the session an earlier task stored (see :class:`SessionCache`).

        True when this client now holds a session. A cached legacy session or v3 access token is
        used as is (a 401 to it leads to one renewal, see :meth:`_reauthenticate`); an expired v3
        access token is renewed with the stored refresh cookie, which is not a login.
        """
        if self._session_checked or not self._session_cacheable or self._login_failure is not None:
            return False
        self._session_checked = True
        entry = self.session_cache.load(self.url, self.username or "", self.password or "")
        if entry is None or self._generation not in (None, entry["generation"]):
            return False

        for name, cookie in entry["cookies"].items():
            if name in ("PHPSESSID", "refreshToken"):
                self.add_secret(cookie["value"])
                self.session.cookies.set(
                    name,
                    cookie["value"],
                    domain=str(cookie.get("domain") or ""),
                    path=str(cookie.get("path") or "/"),
                    secure=bool(cookie.get("secure")),
                )
        self._generation = entry["generation"]
        self._session_ts = float(entry["ts"])
        if self._generation == "legacy":
            self._legacy_session = True
            self._session_from_cache = True
            return True

        token = entry.get("access_token")
        if token:
            self.add_secret(token)
            self._access_token = token
            self._session_from_cache = True
            return True
        if self.session.cookies.get("refreshToken") and self._refresh_v3():
            return True
        self._forget_stored_session()
        return False

    def _store_session(self, generation: str, expires_in: Any = None) -> None:
        """Store the session of a successful login or refresh for the next tasks."""
        self._session_from_cache = False
        if not self._session_cacheable:
            return
        now = time.time()
        cookies = {
            cookie.name: {"value": cookie.value, "domain": cookie.domain, "path": cookie.path, "secure": cookie.secure}
            for cookie in self.session.cookies
            if cookie.name in ("PHPSESSID", "refreshToken") and cookie.value
        }
        entry: dict[str, Any] = {"generation": generation, "ts": self._session_ts or now, "cookies": cookies}
        if generation == "v3":
            until = _jwt_expiry(self._access_token or "")
            if until is None and isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
                until = now + float(expires_in)
            if until is not None:
                until = min(until, now + SessionCache.V3_MAX_TTL) - SessionCache.V3_MARGIN
            usable = until is not None and until > now
            entry.update(access_token=self._access_token if usable else None, access_until=until if usable else None)
        self.session_cache.store(self.url, self.username or "", self.password or "", entry)

    def _forget_stored_session(self) -> None:
        self._session_from_cache = False
        if self._session_cacheable:
            self.session_cache.drop(self.url, self.username or "", self.password or "")

    def _drop_cookie(self, name: str) -> None:
        for cookie in [c for c in self.session.cookies if c.name == name]:
            self.session.cookies.clear(cookie.domain, cookie.path, cookie.name)

    def _authorised_request(
        self, method: str, path: str, *, params: dict[str, Any] | None, data: dict[str, Any] | None, safe: bool
    ) -> ApiResult:
        kwargs: dict[str, Any] = {"params": params, "safe": safe}
        if data is not None and method != "GET":
            if self._generation == "legacy":
                kwargs["form"] = {k: _form_value(v) for k, v in data.items()}
            else:
                kwargs["json_body"] = data
        elif data is not None:
            kwargs["params"] = dict(params or {}, **data)

        response, result = self._send(method, path, bearer=self._bearer(), **kwargs)
        # A 401 means the request was not executed, so repeating it after re-authenticating is safe
        # even for writes.
        if self._session_expired(response, result) and self._reauthenticate():
            response, result = self._send(method, path, bearer=self._bearer(), **kwargs)
        return result

    def _session_expired(self, response: Any, result: ApiResult) -> bool:
        if response.status_code == 401:
            return not self._api_key_active
        # Legacy admin-cabinet answers without a session: 403 "This user is not authorized".
        return (
            self._generation == "legacy"
            and response.status_code == 403
            and "not authorized" in result.all_text().lower()
        )

    @staticmethod
    def _page_needs_login(response: Any) -> bool:
        if response.status_code in (401, 403):
            return True
        if response.status_code in (301, 302, 303, 307, 308):
            return "/session" in response.headers.get("Location", "")
        return False

    # ------------------------------------------------------------------ transport

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        form: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        bearer: str | None = None,
        safe: bool = False,
        login: bool = False,
    ) -> tuple[Any, ApiResult]:
        """Send one request with retries for safe requests; return (response, parsed result)."""
        url = self.url + path
        attempt = 0
        while True:
            attempt += 1
            self.request_count += 1
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    data=form,
                    headers=headers,
                    auth=_HeaderAuth(bearer),
                    verify=self.verify,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError as exc:
                raise self._tls_error(exc, method, path) from None
            except requests.exceptions.ConnectTimeout:
                raise self._transport_error(
                    "no connection to the PBX within %ss" % self.timeout, method, path
                ) from None
            except requests.exceptions.ReadTimeout:
                raise self._transport_error(
                    "the PBX did not answer within %ss" % self.timeout, method, path, "timeout"
                ) from None
            except requests.exceptions.ConnectionError as exc:
                if safe and not login and attempt <= self.retries and _is_connection_reset(exc):
                    self.sleep(self._backoff(attempt, None))
                    continue
                raise self._transport_error(
                    "cannot connect to the PBX: %s" % _short_reason(exc), method, path
                ) from None
            except requests.exceptions.RequestException as exc:
                raise self._transport_error(
                    "request to the PBX failed: %s" % _short_reason(exc), method, path
                ) from None

            self._learn_secrets(response)
            result = parse_response(response.status_code, response.content, response.headers.get("Content-Type"))
            result.retry_after = response.headers.get("Retry-After")

            if safe and not login and attempt <= self.retries and self._is_transient(result):
                self.sleep(self._backoff(attempt, response.headers.get("Retry-After")))
                continue
            return response, result

    def _transport_error(
        self, message: str, method: str, path: str, classification: str = "unreachable"
    ) -> MikoPBXError:
        """An error for a request that got no HTTP answer (connection, timeout, transport)."""
        return MikoPBXError(message, classification, method=method, path=path, url=self.url, secrets=self.secrets)

    def _is_transient(self, result: ApiResult) -> bool:
        status = result.status
        text = result.all_text().lower()
        if status in (429, 502, 503, 504):
            return True
        if status == 400 and WORKER_TIMEOUT_TEXT in text:
            return True
        if status == 500 and self._generation != "v3":
            return True  # legacy: the worker wait (10 s) ran out
        if DB_LOCKED_TEXT in text and not result.ok and status in (200, 422, 500):
            return True
        return False

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.BACKOFF_CAP, self.BACKOFF_BASE * (2 ** (attempt - 1)))
        seconds = _retry_after_seconds(retry_after)
        if seconds is not None:
            delay = max(0.0, min(seconds, self.RETRY_AFTER_CAP))
        return delay

    def _tls_error(self, exc: Exception, method: str, path: str) -> MikoPBXError:
        reason = _short_reason(exc)
        if "certificate verify failed" in reason.lower() or "CERTIFICATE_VERIFY_FAILED" in reason:
            message = "certificate verify failed for the PBX (%s)" % reason
        else:
            message = "TLS handshake with the PBX failed: %s" % reason
        return MikoPBXError(message, "tls", method=method, path=path, url=self.url, secrets=self.secrets)

    def _learn_secrets(self, response: Any) -> None:
        # Only the session/refresh cookies are secrets; harmless short cookies (a language, say)
        # must not become no_log values, which Ansible masks as substrings everywhere.
        for cookie in self.session.cookies:
            if cookie.name in SECRET_COOKIES and cookie.value and len(cookie.value) >= 8:
                self.add_secret(cookie.value)
        try:
            text = response.text if len(response.content or b"") < 2_000_000 else ""
        except Exception:  # pragma: no cover - undecodable body
            text = ""
        for match in _KEY_IN_TEXT_RE.findall(text or ""):
            self.add_secret(match)

    @staticmethod
    def _normalise_url(url: str) -> str:
        if not url:
            raise MikoPBXError("url is required (e.g. https://pbx.example.net)", "invalid_input")
        url = str(url).strip()
        if "://" not in url:
            url = "https://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MikoPBXError("url must be http(s)://host[:port], got an invalid value", "invalid_input")
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def _silence_insecure_warning() -> None:
    try:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    except (ImportError, AttributeError):  # pragma: no cover - urllib3 always comes with requests
        pass


def _form_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _js_global(page: str, name: str) -> str | None:
    match = re.search(r"\b%s\s*=\s*(['\"])(.*?)\1" % re.escape(name), page or "")
    return match.group(2) if match else None


def _is_connection_reset(exc: Exception) -> bool:
    text = repr(exc).lower()
    return any(word in text for word in ("reset", "aborted", "remotedisconnected", "broken pipe", "protocolerror"))


def _short_reason(exc: Exception) -> str:
    """The innermost readable reason of a requests/urllib3 exception, without the URL noise."""
    text = str(exc)
    for pattern in (
        r"\[SSL: [A-Z_]+\][^(')\]]*",
        r"certificate verify failed[^(')\]]*",
        r"Name or service not known|nodename nor servname provided|Temporary failure in name resolution",
        r"Connection refused|Connection reset by peer|No route to host|Network is unreachable",
    ):
        match = re.search(pattern, text)
        if match:
            return match.group(0).strip()
    return text[:200]
