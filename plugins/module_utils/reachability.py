# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PBX-side reachability of the licensing hosts: the fixed probe command and its output parser.

The probe runs *on the PBX* (through ``system:executeBashCommand`` on 2026.1), because only the
PBX's own resolver, routes, firewall and proxy say whether the PBX can reach the licensing hosts;
a check made from the Ansible controller proves nothing about that.

The command has one shape, shared with the fleet emulator::

    sh -c '<PROBE_SCRIPT>' mikopbx-probe-v1 <port> <timeout> <host>...

``PROBE_SCRIPT`` is a constant. Everything that comes from the user (port, timeout, host names) is
validated here first and then passed as shell-quoted positional arguments, so no user value ever
becomes part of the script text. The script runs ``curl`` once per host and prints one line per
host::

    MIKOPBX-PROBE<TAB><host><TAB><curl exit code><TAB><http status or 000><TAB><curl error or empty>

:func:`parse_probe_output` turns those lines into per-host verdicts naming the first failing
stage: ``dns`` -> ``tcp`` -> ``tls`` -> ``http``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable
from typing import Any

from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError

PROBE_MARKER = "mikopbx-probe-v1"
LINE_PREFIX = "MIKOPBX-PROBE"
DEFAULT_HOSTS = ("lic.miko.ru", "lic.mikopbx.com")
DEFAULT_PORT = 443
DEFAULT_TIMEOUT = 10
# The hosts are probed in parallel; one probe takes at most timeout + 5 s, and the 2026.1 API
# worker waits 30 s for any request, so the connect timeout is capped at 20 s.
MAX_TIMEOUT = 20
MAX_HOSTS = 10
HTTP_GRACE = 5
STAGES = ("dns", "tcp", "tls", "http")

# The script is the whole trust boundary: it must stay free of single quotes (it is wrapped in one
# pair) and must read user values only from "$@". Positional arguments: $1 port, $2 connect
# timeout, the rest host names. Every host is probed at the same time (one curl each, in a
# background subshell writing its own file), so the run takes one host's time whatever the number
# of hosts: the 2026.1 API worker gives up on a request after 30 s. curl's connect timeout covers
# name resolution, the TCP connect and the TLS handshake; the HTTP answer gets 5 s more. Only the
# first line of curl's stderr is kept ("curl: (N) text"), with tabs and carriage returns
# flattened, so an error text cannot break the line format. The lines are printed in argument order.
PROBE_SCRIPT = (
    "p=$1; t=$2; shift 2; m=$((t + 5)); "
    'd=$(mktemp -d 2>/dev/null) || { d=/tmp/mikopbx-probe.$$; mkdir -p "$d"; }; '
    "i=0; "
    'for h in "$@"; do i=$((i + 1)); ( '
    'c=$(curl -sS -o /dev/null -w "%{http_code}" --connect-timeout "$t" --max-time "$m" '
    '"https://$h:$p/" 2>"$d/$i.err"); x=$?; '
    'e=$(head -n 1 "$d/$i.err" | tr "\\t\\r" "  "); '
    'printf "MIKOPBX-PROBE\\t%s\\t%s\\t%s\\t%s\\n" "$h" "$x" "${c:-000}" "$e" >"$d/$i.out" '
    ") & done; wait; "
    'i=0; for h in "$@"; do i=$((i + 1)); cat "$d/$i.out" 2>/dev/null; done; '
    'rm -rf "$d"'
)

_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

# curl exit codes -> first failing stage. 28 (timeout) is decided by the error text, see
# _stage_for_timeout.
_DNS_CODES = {5, 6}
_TCP_CODES = {7, 45}
_TLS_CODES = {35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91}
_HTTP_CODES = {16, 18, 47, 52, 55, 56, 92}
_TIMEOUT_CODE = 28
_CERT_NOT_TRUSTED = 60

_CURL_PREFIX_RE = re.compile(r"^curl:\s*\(\d+\)\s*")


class ProbeInputError(ValueError):
    """A host, port or timeout that must not reach the PBX."""


def validate_host(host: Any) -> str:
    """Return ``host`` as a DNS name or raise :class:`ProbeInputError`.

    Only letters, digits, hyphens and dots are accepted (labels of 1-63 characters, no leading or
    trailing hyphen, 253 characters at most): no IP literals with ports, no URLs, no spaces, no
    option-looking values.
    """
    if not isinstance(host, str):
        raise ProbeInputError("host %r is not a string" % (host,))
    name = host.strip().rstrip(".").lower()
    if not name or len(name) > 253:
        raise ProbeInputError("host %r is not a valid DNS name" % host)
    labels = name.split(".")
    if not all(_LABEL_RE.match(label) for label in labels):
        raise ProbeInputError("host %r is not a valid DNS name (letters, digits, hyphens and dots only)" % host)
    return name


def validate_hosts(hosts: Iterable[Any] | None) -> list[str]:
    """Validate and de-duplicate the host list, keeping its order."""
    names: list[str] = []
    for host in hosts if hosts is not None else DEFAULT_HOSTS:
        name = validate_host(host)
        if name not in names:
            names.append(name)
    if not names:
        raise ProbeInputError("at least one host is needed")
    if len(names) > MAX_HOSTS:
        raise ProbeInputError("at most %d hosts can be probed in one run, got %d" % (MAX_HOSTS, len(names)))
    return names


def _validate_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ProbeInputError("%s must be an integer, got %r" % (name, value))
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,6}", value.strip()):
            raise ProbeInputError("%s must be an integer, got %r" % (name, value))
        value = int(value.strip())
    if not low <= value <= high:
        raise ProbeInputError("%s must be between %d and %d, got %d" % (name, low, high, value))
    return value


def command_timeout(timeout: int) -> int:
    """Seconds the PBX may spend on the whole probe (hosts run in parallel), for executeBashCommand."""
    return timeout + HTTP_GRACE + 3


def build_probe_command(
    hosts: Iterable[Any] | None = None, port: Any = DEFAULT_PORT, timeout: Any = DEFAULT_TIMEOUT
) -> tuple[str, list[str], int, int]:
    """Return ``(command, hosts, port, timeout)`` for ``system:executeBashCommand``.

    Raises :class:`ProbeInputError` before anything is sent when a value is not acceptable.
    """
    names = validate_hosts(hosts)
    port_number = _validate_int(port, "port", 1, 65535)
    # Named as the module option: the connection option "timeout" is a different setting.
    seconds = _validate_int(timeout, "probe_timeout", 1, MAX_TIMEOUT)
    args = ["sh", "-c", PROBE_SCRIPT, PROBE_MARKER, str(port_number), str(seconds)] + names
    return " ".join(shlex.quote(arg) for arg in args), names, port_number, seconds


def _clean_error(text: str) -> str:
    return _CURL_PREFIX_RE.sub("", text.strip())


def _stage_for_timeout(http_status: str, error: str) -> str:
    """Which stage a curl timeout (exit 28) belongs to.

    curl's connect timeout covers resolution, the TCP connect and the TLS handshake, and its
    message says which one stalled; a timeout with an HTTP status, or an "operation" timeout
    (the total limit, which is longer than the connect timeout), happened after connecting.
    """
    text = error.lower()
    if http_status not in ("", "000"):
        return "http"
    if "resolv" in text:
        return "dns"
    if "ssl" in text or "tls" in text or "handshake" in text:
        return "tls"
    if "operation timed out" in text:
        return "http"
    return "tcp"


def classify_curl_result(exit_code: int, http_status: str, error: str) -> tuple[str | None, bool, str]:
    """Map one probe line to ``(failed_stage, intercepted, detail)``; ``failed_stage`` None = ok.

    A failed_stage of ``"probe"`` means the probe itself could not run the check (curl missing,
    unexpected exit code); the host is then not reported as reachable.
    """
    error = _clean_error(error)
    suffix = (": " + error) if error else ""

    if exit_code == 0:
        status = int(http_status) if http_status.isdigit() else 0
        if status >= 500:
            return "http", False, "HTTPS answered with HTTP %d (server error)" % status
        return None, False, "HTTPS answered with HTTP %s" % (http_status or "000")

    if exit_code in _DNS_CODES:
        return "dns", False, "name resolution failed on the PBX (curl exit %d)%s" % (exit_code, suffix)
    if exit_code in _TCP_CODES:
        return "tcp", False, "TCP connection failed (curl exit %d)%s" % (exit_code, suffix)
    if exit_code == _CERT_NOT_TRUSTED:
        return "tls", True, ("certificate not trusted: TLS interception or unverified chain (curl exit 60)%s" % suffix)
    if exit_code in _TLS_CODES:
        return "tls", False, "TLS handshake failed (curl exit %d)%s" % (exit_code, suffix)
    if exit_code in _HTTP_CODES:
        return "http", False, "connected, but the HTTP exchange failed (curl exit %d)%s" % (exit_code, suffix)
    if exit_code == _TIMEOUT_CODE:
        stage = _stage_for_timeout(http_status, error)
        what = {
            "dns": "name resolution timed out",
            "tcp": "TCP connection timed out (no route, or packets dropped by a firewall)",
            "tls": "TCP connected, but the TLS handshake timed out",
            "http": "connected, but no HTTP answer in time",
        }[stage]
        return stage, False, "%s (curl exit 28)%s" % (what, suffix)
    if exit_code == 127:
        return "probe", False, "curl is not available on the PBX%s" % suffix
    return "probe", False, "the probe could not check this host (curl exit %d)%s" % (exit_code, suffix)


def _host_result(
    host: str,
    ok: bool,
    stage: str | None,
    detail: str,
    intercepted: bool = False,
    exit_code: int | None = None,
    http_status: str | None = None,
) -> dict[str, Any]:
    return {
        "host": host,
        "ok": ok,
        "failed_stage": stage,
        "detail": detail,
        "intercepted": intercepted,
        "curl_exit": exit_code,
        "http_status": http_status,
    }


def parse_probe_output(output: str, hosts: Iterable[str]) -> list[dict[str, Any]]:
    """Per-host verdicts, in the order of ``hosts``, from the probe's output text.

    Lines that are not probe lines are ignored. A host without a line (the command was cut short
    or refused) is reported as not reachable with a ``probe`` failure.
    """
    lines: dict[str, tuple[int | None, str, str]] = {}
    for raw in (output or "").splitlines():
        if not raw.startswith(LINE_PREFIX + "\t"):
            continue
        fields = raw.rstrip("\r").split("\t", 4)
        while len(fields) < 5:
            fields.append("")
        _prefix, host, code, http_status, error = fields
        try:
            exit_code: int | None = int(code.strip())
        except ValueError:
            exit_code = None
        lines.setdefault(host.strip().lower(), (exit_code, http_status.strip(), error))

    results = []
    for host in hosts:
        if host not in lines:
            results.append(_host_result(host, False, "probe", "the probe printed no result for this host"))
            continue
        exit_code, http_status, error = lines[host]
        if exit_code is None:
            results.append(
                _host_result(host, False, "probe", "unreadable probe line for this host", http_status=http_status)
            )
            continue
        stage, intercepted, detail = classify_curl_result(exit_code, http_status, error)
        results.append(_host_result(host, stage is None, stage, detail, intercepted, exit_code, http_status))
    return results


def first_failure(
    host_results: list[dict[str, Any]], license_ping: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The first host that failed (``{host, stage, detail}``), else a failed ping, else None."""
    for item in host_results:
        if not item["ok"]:
            return {"host": item["host"], "stage": item["failed_stage"], "detail": item["detail"]}
    if license_ping is not None and license_ping.get("ok") is False:
        return {"host": None, "stage": "license_ping", "detail": license_ping.get("detail")}
    return None


def summarise(host_results: list[dict[str, Any]], license_ping: dict[str, Any] | None) -> tuple[bool, str]:
    """``(reachable, msg)`` for the module result.

    Reachable means every probed host passed all stages and the PBX's own licence ping (when it
    was asked) succeeded.
    """
    failed = [item for item in host_results if not item["ok"]]
    ping_failed = license_ping is not None and license_ping.get("ok") is False
    if host_results and not failed and not ping_failed:
        return True, "the PBX reaches every licensing host (%s)" % ", ".join(i["host"] for i in host_results)
    if not host_results:
        if license_ping is None:
            return False, "nothing was checked"
        if ping_failed:
            return False, "the PBX's licence ping failed: %s" % license_ping.get("detail")
        return True, "the PBX's licence ping succeeded"
    if failed:
        parts = ["%s: %s stage failed" % (i["host"], i["failed_stage"]) for i in failed]
        text = "the PBX cannot reach every licensing host (%s)" % "; ".join(parts)
        if ping_failed:
            text += "; its licence ping failed too"
        return False, text
    return False, "every probed host answered, but the PBX's licence ping failed: %s" % license_ping.get("detail")


# executeBashCommand refused or unknown: a restricted API key (401/403), or a build without it (404/405).
_PROBE_UNAVAILABLE = (401, 403, 404, 405)


class ReachabilityCheck:
    """Run the probe on the PBX (or fall back to the licence ping) and shape the result."""

    def __init__(
        self,
        client: Any,
        command: str,
        hosts: list[str],
        timeout: int,
        license_ping: bool = True,
        warn: Callable[[str], Any] | None = None,
    ) -> None:
        self.client = client
        self.license_ping = license_ping
        self.warn = warn or (lambda text: None)
        self.command = command
        self.hosts = hosts
        self.timeout = timeout

    def run_probe(self) -> list[dict[str, Any]] | None:
        """Per-host results, or None when the PBX does not let us run the probe."""
        if self.client.generation != "v3":
            return None
        # The controller must wait at least as long as the PBX may run the probe.
        seconds = command_timeout(self.timeout)
        saved = self.client.timeout
        self.client.timeout = max(saved, seconds + 5)
        try:
            result = self.client.call(
                "system.executeBashCommand", data={"command": self.command, "timeout": seconds}, allow_failure=True
            )
        finally:
            self.client.timeout = saved
        if not result.ok:
            err = self.client.error_from_result(result, "system.executeBashCommand", method="POST")
            if result.status in _PROBE_UNAVAILABLE or err.classification == "unsupported":
                self.warn(
                    "the PBX refused the reachability probe (%s); only its licence ping was checked. Use a login or "
                    "an API key with full permissions for the per-host stages." % err.message
                )
                return None
            raise err
        data = result.data if isinstance(result.data, dict) else {}
        return parse_probe_output(str(data.get("output") or ""), self.hosts)

    def ping(self) -> dict[str, Any]:
        """The PBX licence library's own verdict. Not repeated by the client: the PBX already tries 3 times."""
        try:
            result = self.client.call("license.ping", allow_failure=True, safe=False)
        except MikoPBXError as err:
            if err.classification != "timeout":
                raise
            return {"ok": False, "detail": "the licence ping did not finish in time: %s" % err.message}
        if result.ok:
            return {"ok": True, "detail": "the PBX's licence library reached the licensing server"}
        err = self.client.error_from_result(result, "license.ping", method="GET")
        if result.status in (401, 403, 429):
            raise err
        if err.classification == "timeout":
            return {
                "ok": False,
                "detail": "the PBX's API worker gave up waiting for the licence ping: the licensing server most "
                "likely did not answer",
            }
        text = result.error_text()
        return {
            "ok": False,
            "detail": "the licence ping failed (the PBX tries three times)%s" % ((": " + text) if text else ""),
        }

    def run(self) -> dict[str, Any]:
        host_results = self.run_probe()
        method = "pbx_probe" if host_results is not None else "license_ping_only"

        license_ping = None
        if self.license_ping or host_results is None:
            license_ping = self.ping()

        host_results = host_results or []
        reachable, msg = summarise(host_results, license_ping)
        return {
            "changed": False,
            "generation": self.client.generation,
            "method": method,
            "reachable": reachable,
            "hosts": host_results,
            "license_ping": license_ping,
            "first_failure": first_failure(host_results, license_ping),
            "probe_command": self.command,
            "msg": msg if method == "pbx_probe" else "%s (licence ping only: no per-host probe)" % msg,
        }
