"""Unit tests of mikopbx_reachability: the HTTP boundary is faked (tests/unit/conftest.py); the client,
the probe builder and parser and the module itself run for real."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.mikopbx.marketplace.plugins.module_utils import reachability
from ansible_collections.mikopbx.marketplace.plugins.modules import mikopbx_reachability

B: Any = None
PBX_URL = "https://pbx.example.net"
V3 = "/pbxcore/api/v3/"
LEGACY = "/pbxcore/api/"
API_KEY = "feed" * 16
PASSWORD = "r3ach-Pa55"

BASH = V3 + "system:executeBashCommand"
PING_V3 = V3 + "license:ping"
PING_LEGACY = LEGACY + "license/ping"
LEGACY_LOGIN = "/admin-cabinet/session/start"


@pytest.fixture(autouse=True)
def _bodies(bodies: Any) -> None:
    global B
    B = bodies


def v3_args(**extra: Any) -> dict[str, Any]:
    return dict({"url": PBX_URL, "api_key": API_KEY, "validate_certs": False}, **extra)


def legacy_args(**extra: Any) -> dict[str, Any]:
    args = {"url": PBX_URL, "username": "admin", "password": PASSWORD, "validate_certs": False}
    return dict(args, api_generation="legacy", **extra)


def run(capsys: pytest.CaptureFixture[str], args: dict[str, Any], *, check: bool = False) -> tuple[dict, list]:
    args = dict(args, _ansible_check_mode=check)
    ansible_warnings._global_warnings.clear()
    ansible_warnings._global_deprecations.clear()
    with patch_module_args(args), pytest.raises(SystemExit):
        mikopbx_reachability.main()
    result = json.loads(capsys.readouterr().out)
    return result, [_warning_text(w) for w in result.get("warnings", [])]


def _warning_text(warning: Any) -> str:
    # ansible-core 2.19 returns warnings as structured summaries, older versions as strings.
    if isinstance(warning, dict):
        return str((warning.get("event") or {}).get("msg") or warning.get("msg") or warning)
    return str(warning)


def probe_reply(*lines: tuple[str, int, str, str]) -> Any:
    """executeBashCommand's answer with the given probe lines (built from the sent command's hosts)."""

    def reply(request: Any) -> Any:
        command = request.json["command"]
        output = "".join("MIKOPBX-PROBE\t%s\t%s\t%s\t%s\n" % line for line in lines)
        data = {"command": command, "output": output, "exitCode": 0, "timeout": request.json["timeout"]}
        return B.Reply(200, json=B.v3_ok(data, function="executeBashCommand"))

    return reply


def ping_ok(legacy: bool = False) -> Any:
    return B.Reply(200, json=B.legacy_ok() if legacy else B.v3_ok(function="ping"))


def ping_failed(legacy: bool = False) -> Any:
    if legacy:
        return B.Reply(200, json=B.legacy_fail([], function="ping"))
    return B.Reply(422, json=B.v3_fail([], function="ping"))


ALL_OK = [("lic.miko.ru", 0, "200", ""), ("lic.mikopbx.com", 0, "404", "")]


def test_v3_probe_all_reachable(fake_http, capsys):
    fake_http.set("POST", BASH, probe_reply(*ALL_OK))
    fake_http.set("GET", PING_V3, ping_ok())

    result, warnings = run(capsys, v3_args())

    assert result["changed"] is False
    assert result["reachable"] is True
    assert result["method"] == "pbx_probe"
    assert [h["host"] for h in result["hosts"]] == ["lic.miko.ru", "lic.mikopbx.com"]
    assert all(h["ok"] and h["failed_stage"] is None for h in result["hosts"])
    assert result["license_ping"]["ok"] is True
    assert result["first_failure"] is None
    assert warnings == []
    assert fake_http.calls() == [("POST", BASH), ("GET", PING_V3)]


def test_v3_command_is_the_fixed_probe(fake_http, capsys):
    fake_http.set("POST", BASH, probe_reply(*ALL_OK))
    fake_http.set("GET", PING_V3, ping_ok())
    run(capsys, v3_args(port=8443, probe_timeout=4, hosts=["LIC.mikopbx.com", "lic.miko.ru"]))

    sent = fake_http.requests[0].json
    argv = shlex.split(sent["command"])
    assert argv[:4] == ["sh", "-c", reachability.PROBE_SCRIPT, "mikopbx-probe-v1"]
    assert argv[4:] == ["8443", "4", "lic.mikopbx.com", "lic.miko.ru"]
    assert sent["timeout"] == reachability.command_timeout(4)


@pytest.mark.parametrize(
    "lines,stage,intercepted",
    [
        ([("lic.miko.ru", 6, "000", "curl: (6) Could not resolve host: lic.miko.ru")], "dns", False),
        ([("lic.miko.ru", 28, "000", "Connection timed out after 10000 milliseconds")], "tcp", False),
        ([("lic.miko.ru", 60, "000", "SSL certificate problem: self-signed certificate in chain")], "tls", True),
        ([("lic.miko.ru", 0, "503", "")], "http", False),
    ],
)
def test_v3_first_failing_stage_is_named(fake_http, capsys, lines, stage, intercepted):
    fake_http.set("POST", BASH, probe_reply(*lines, ("lic.mikopbx.com", 0, "200", "")))
    fake_http.set("GET", PING_V3, ping_ok())

    result, _warnings = run(capsys, v3_args())

    assert result["reachable"] is False
    first, second = result["hosts"]
    assert first["failed_stage"] == stage and first["intercepted"] is intercepted
    assert second["ok"] is True
    assert result["first_failure"]["host"] == "lic.miko.ru"
    assert result["first_failure"]["stage"] == stage
    assert "lic.miko.ru: %s stage failed" % stage in result["msg"]
    assert "failed" not in result


def test_fail_on_unreachable(fake_http, capsys):
    fake_http.set("POST", BASH, probe_reply(("lic.miko.ru", 7, "000", "refused"), ALL_OK[1]))
    fake_http.set("GET", PING_V3, ping_ok())
    result, _warnings = run(capsys, v3_args(fail_on_unreachable=True))
    assert result["failed"] is True
    assert result["first_failure"]["stage"] == "tcp"
    assert result["hosts"]


def test_failed_ping_alone_makes_the_pbx_unreachable(fake_http, capsys):
    fake_http.set("POST", BASH, probe_reply(*ALL_OK))
    fake_http.set("GET", PING_V3, ping_failed())
    result, _warnings = run(capsys, v3_args())
    assert result["reachable"] is False
    assert result["first_failure"] == {
        "host": None,
        "stage": "license_ping",
        "detail": result["license_ping"]["detail"],
    }
    # The ping is never repeated by the client: the PBX already tries three times.
    assert fake_http.count("GET", PING_V3) == 1


def test_license_ping_false_skips_the_ping(fake_http, capsys):
    fake_http.set("POST", BASH, probe_reply(*ALL_OK))
    result, _warnings = run(capsys, v3_args(license_ping=False))
    assert result["license_ping"] is None
    assert result["reachable"] is True
    assert fake_http.calls() == [("POST", BASH)]


@pytest.mark.parametrize("status", [401, 403])
def test_restricted_key_falls_back_to_license_ping_only(fake_http, capsys, status):
    fake_http.set("POST", BASH, B.Reply(status, json=B.v3_fail({"error": ["Access denied"]})))
    fake_http.set("GET", PING_V3, ping_ok())

    result, warnings = run(capsys, v3_args(license_ping=False))

    assert result["method"] == "license_ping_only"
    assert result["hosts"] == []
    assert result["license_ping"]["ok"] is True
    assert result["reachable"] is True
    assert any("licence ping" in w for w in warnings)
    assert fake_http.count("POST", BASH) == 1


def test_probe_refused_for_another_reason_fails(fake_http, capsys):
    fake_http.set("POST", BASH, B.Reply(422, json=B.v3_fail({"error": ["Command is not allowed"]})))
    result, _warnings = run(capsys, v3_args())
    assert result["failed"] is True
    assert "Command is not allowed" in result["msg"]


def test_missing_probe_lines_are_reported_per_host(fake_http, capsys):
    fake_http.set("POST", BASH, probe_reply(ALL_OK[1]))
    fake_http.set("GET", PING_V3, ping_ok())
    result, _warnings = run(capsys, v3_args())
    assert [h["failed_stage"] for h in result["hosts"]] == ["probe", None]
    assert result["reachable"] is False


def test_legacy_ping_success_message_says_it_once(fake_http, capsys):
    legacy_login(fake_http)
    fake_http.set("GET", PING_LEGACY, B.Reply(200, json=B.legacy_ok([])))

    result, _warnings = run(capsys, legacy_args())

    assert result["reachable"] is True and result["method"] == "license_ping_only"
    assert result["msg"] == "the PBX's licence ping succeeded (licence ping only: no per-host probe)"


def legacy_login(fake_http: Any) -> None:
    reply = B.Reply(200, json={"success": True, "message": []}, cookies={"PHPSESSID": "sessid-legacy"})
    fake_http.set("POST", LEGACY_LOGIN, reply)


def test_legacy_is_license_ping_only(fake_http, capsys):
    legacy_login(fake_http)
    fake_http.set("GET", PING_LEGACY, ping_failed(legacy=True))

    result, _warnings = run(capsys, legacy_args(license_ping=False))

    assert result["generation"] == "legacy"
    assert result["method"] == "license_ping_only"
    assert result["hosts"] == []
    assert result["reachable"] is False
    assert result["first_failure"]["stage"] == "license_ping"
    assert "licence ping only" in result["msg"]
    assert result["msg"].count("no per-host probe") == 1, result["msg"]
    assert "mikopbx-probe-v1" in result["probe_command"]
    assert fake_http.calls() == [("POST", LEGACY_LOGIN), ("GET", PING_LEGACY)]


def test_legacy_worker_timeout_on_ping_is_a_failed_ping(fake_http, capsys):
    legacy_login(fake_http)
    fake_http.set("GET", PING_LEGACY, B.Reply(500, json=B.legacy_errors(["500 (Internal Server Error) "])))

    result, _warnings = run(capsys, legacy_args())

    assert result["license_ping"]["ok"] is False
    assert "gave up waiting" in result["license_ping"]["detail"]
    assert fake_http.count("GET", PING_LEGACY) == 1


@pytest.mark.parametrize(
    "args,word",
    [
        ({"hosts": ["lic.mikopbx.com; reboot"]}, "DNS name"),
        ({"hosts": ["https://lic.mikopbx.com"]}, "DNS name"),
        ({"hosts": ["-oProxyCommand=x"]}, "DNS name"),
        ({"port": 0}, "port"),
        ({"probe_timeout": 25}, "probe_timeout must be between 1 and 20, got 25"),
        ({"probe_timeout": 0}, "probe_timeout must be between 1 and 20, got 0"),
        ({"hosts": []}, "at least one"),
    ],
)
def test_bad_input_fails_before_any_request(fake_http, capsys, args, word):
    result, _warnings = run(capsys, v3_args(**args))
    assert result["failed"] is True
    assert word in result["msg"]
    assert "nothing was sent" in result["msg"]
    assert fake_http.requests == []


def test_check_mode_runs_the_same_read_only_probe(fake_http, capsys):
    fake_http.set("POST", BASH, probe_reply(*ALL_OK))
    fake_http.set("GET", PING_V3, ping_ok())
    result, _warnings = run(capsys, v3_args(), check=True)
    assert result["reachable"] is True and result["changed"] is False
    assert fake_http.calls() == [("POST", BASH), ("GET", PING_V3)]


def test_controller_waits_longer_than_the_probe(fake_http, capsys):
    fake_http.set("POST", BASH, probe_reply(*ALL_OK))
    fake_http.set("GET", PING_V3, ping_ok())
    run(capsys, v3_args(timeout=5, probe_timeout=20))
    bash, ping = fake_http.requests
    assert bash.timeout >= reachability.command_timeout(20)
    assert ping.timeout == 5


def test_pbx_unreachable_from_the_controller_fails_with_the_cause(fake_http, capsys):
    import requests

    fake_http.set("POST", BASH, requests.exceptions.ConnectionError("Connection refused"))
    result, _warnings = run(capsys, v3_args())
    assert result["failed"] is True
    assert result["error"]["classification"] == "unreachable"
    assert API_KEY not in json.dumps(result)
