"""Client authentication and TLS against the emulated fleet (field cases FC-16, FC-17, FC-19).

The module under test is mikopbx_register (every module shares the client); the PBX side is read
from the emulator's request log (kinds ``read``/``write``/``auth``).
"""

from __future__ import annotations

import pytest
import requests

pytestmark = [pytest.mark.emulator]

MODULE = "mikopbx.marketplace.mikopbx_register"
WRONG_PASSWORD = "not-the-password-0451"


@pytest.fixture
def fleet(start_fleet):
    return start_fleet(count=2, generation="mixed", time_scale=0.05)


def register(key: str, **extra):
    return {"name": "register", MODULE: dict(license_key=key), **extra}


def password_connection(password: str = "{{ mikopbx_password }}") -> dict[str, str]:
    return {
        "url": "{{ mikopbx_url }}",
        "username": "{{ mikopbx_username }}",
        "password": password,
        "api_generation": "{{ mikopbx_generation }}",
        "ca_path": "{{ mikopbx_ca_path }}",
    }


def auth_entries(fleet, host: str) -> list[dict]:
    return [e for e in fleet.control.requests(host) if e["kind"] == "auth"]


# ------------------------------------------------------------------ FC-16: wrong password, lockout


def test_fc16_wrong_password_fails_host_after_one_login(fleet, run_playbook):
    key = fleet.control.create_company("Example LLC", "it@example.com")
    # A play with several tasks: the host must fail at the first one, with one login attempt only.
    tasks = [register(key, name="register %d" % i, ignore_errors=False) for i in range(5)]

    run = run_playbook(fleet, tasks, connection=password_connection(WRONG_PASSWORD))

    failures = run.failures()
    for host in fleet.names():
        assert host in failures, run.output[-3000:]
        assert "credentials rejected" in failures[host]["msg"]
        assert failures[host]["error"]["classification"] == "auth"
        log = fleet.control.requests(host)
        assert len(auth_entries(fleet, host)) == 1, log
        assert [e for e in log if e["kind"] == "write"] == []
        assert fleet.control.stored_key(host) == ""
    assert WRONG_PASSWORD not in run.output
    assert run.output.count("register 1") == 0  # the failed host runs no further task


@pytest.mark.parametrize("generation", ["v3", "legacy"])
def test_fc16_login_lockout_is_reported_and_stops_the_host(start_fleet, run_playbook, generation):
    # Real time: the PBX's 5-minute failed-login window must not run out while the test runs.
    fleet = start_fleet(count=1, generation=generation, time_scale=1.0)
    host = fleet.first(generation)
    url = fleet.var(host, "mikopbx_url")
    ca = fleet.var(host, "mikopbx_ca_path")
    # Someone (an old password in another inventory) used up the PBX's failed-login budget.
    for attempt in range(12):  # noqa: B007
        if generation == "v3":
            requests.post(url + "/pbxcore/api/v3/auth:login", json={"login": "admin", "password": "x"}, verify=ca)
        else:
            requests.post(
                url + "/admin-cabinet/session/start",
                data={"login": "admin", "password": "x"},
                headers={"X-Requested-With": "XMLHttpRequest"},
                verify=ca,
            )
    fleet.control.clear_requests(host)
    key = fleet.control.create_company("Example LLC", "it@example.com")

    run = run_playbook(
        fleet,
        [register(key, name="a", ignore_errors=False), register(key, name="b")],
        connection=password_connection(),
        limit=host,
    )

    failure = run.failures()[host]
    assert failure["error"]["classification"] == "rate_limited", failure
    assert "too many login attempts" in failure["msg"]
    assert len(auth_entries(fleet, host)) == 1


def test_fc16_nginx_429_at_login_is_a_lockout(fleet, run_playbook):
    host = fleet.first("v3")
    fleet.control.add_fault("rate_limit", host, count=20, match="auth:login")
    key = fleet.control.create_company("Example LLC", "it@example.com")

    run = run_playbook(fleet, [register(key, ignore_errors=False)], connection=password_connection(), limit=host)

    failure = run.failures()[host]
    assert failure["error"]["classification"] == "rate_limited", failure
    assert failure["error"]["status"] == 429
    assert len(fleet.control.requests(host)) == 1  # no retry loop against a limiter


# ------------------------------------------------------------------ FC-17: token expiry mid-run


def test_fc17_expired_access_token_is_refreshed_once(fleet, pbx_client):
    host = fleet.first("v3")
    client = pbx_client(fleet, host, username="admin", password=fleet.var(host, "mikopbx_password"))
    assert client.settings()["PBXLicense"] == ""
    fleet.control.clear_requests(host)

    fleet.control.advance_clock(900 + 600 + 60)  # past expiry and the 10-minute leeway
    client.invalidate_settings()
    client.settings()

    log = [(e["path"].rsplit("/", 1)[-1], e["status"], e["kind"]) for e in fleet.control.requests(host)]
    assert log == [
        ("system:executeSqlRequest", 401, "read"),
        ("auth:refresh", 200, "auth"),
        ("system:executeSqlRequest", 200, "read"),
    ]


def test_fc17_refused_refresh_leads_to_one_new_login(fleet, pbx_client):
    host = fleet.first("v3")
    client = pbx_client(fleet, host, username="admin", password=fleet.var(host, "mikopbx_password"))
    client.settings()
    fleet.control.clear_requests(host)

    fleet.control.advance_clock(31 * 86400)  # the 30-day refresh token has expired as well
    client.invalidate_settings()
    client.settings()

    log = [(e["path"].rsplit("/", 1)[-1], e["status"]) for e in fleet.control.requests(host)]
    assert log == [
        ("system:executeSqlRequest", 401),
        ("auth:refresh", 401),
        ("auth:login", 200),
        ("system:executeSqlRequest", 200),
    ]


def test_fc17_expired_legacy_session_leads_to_one_new_login(fleet, pbx_client):
    host = fleet.first("legacy")
    client = pbx_client(fleet, host)
    client.call("license.ping")
    fleet.control.clear_requests(host)

    fleet.control.advance_clock(3600 + 60)  # the PHP session lifetime
    client.call("license.ping")

    log = [(e["path"], e["status"], e["kind"]) for e in fleet.control.requests(host)]
    assert [entry[2] for entry in log].count("auth") == 1, log
    assert log[-1][1] == 200


def test_fc17_token_expiry_inside_one_play(fleet, run_playbook):
    """Every task builds its own client, so a long play never reuses an expired token."""
    key = fleet.control.create_company("Example LLC", "it@example.com")
    host = fleet.first("v3")
    tasks = [
        register(key, name="first"),
        {
            "name": "twenty minutes later",
            "ansible.builtin.uri": {
                "url": "{{ mikopbx_emulator_control_url }}/control/clock/advance",
                "method": "POST",
                "body_format": "json",
                "body": {"seconds": 1200},
            },
            "connection": None,
        },
        register(key, name="second"),
    ]

    run = run_playbook(fleet, tasks, connection=password_connection(), limit=host)

    assert run.result(host, "first")["changed"] is True
    assert run.result(host, "second")["changed"] is False
    assert run.result(host, "second").get("failed") is not True


# ------------------------------------------------------------------ FC-19: TLS options


@pytest.mark.parametrize(
    "tls",
    [{"validate_certs": False}, {"validate_certs": True, "ca_path": "{{ mikopbx_ca_path }}"}],
    ids=["validate_certs-false", "ca_path"],
)
def test_fc19_tls_options_work(fleet, run_playbook, tls):
    key = fleet.control.create_company("Example LLC", "it@example.com")
    connection = {k: v for k, v in password_connection().items() if k != "ca_path"}
    connection.update(tls)

    run = run_playbook(fleet, [register(key)], connection=connection)

    for host in fleet.names():
        result = run.result(host)
        assert result.get("failed") is not True, result
        assert result["action"] == "applied_key"


def test_fc19_verification_without_ca_fails_as_tls_not_unreachable(fleet, run_playbook):
    key = fleet.control.create_company("Example LLC", "it@example.com")
    connection = {k: v for k, v in password_connection().items() if k != "ca_path"}
    connection["validate_certs"] = True

    run = run_playbook(fleet, [register(key)], connection=connection)

    for host in fleet.names():
        result = run.result(host)
        assert result["failed"] is True
        assert "certificate verify failed" in result["msg"]
        assert fleet.var(host, "mikopbx_url") in result["msg"]
        assert result["error"]["classification"] == "tls"
        assert "unreachable" not in result["msg"].lower()
        assert fleet.control.requests(host) == []  # the handshake failed: nothing reached the API


def test_fc17_rate_limited_read_backs_off_and_continues(fleet, run_playbook):
    host = fleet.first("v3")
    key = fleet.control.create_company("Example LLC", "it@example.com")
    fleet.control.seed_key(host, key)
    fleet.control.clear_requests(host)
    fleet.control.add_fault("rate_limit", host, count=2, match="executeSqlRequest")

    run = run_playbook(fleet, [register(key)], limit=host)

    result = run.result(host)
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    log = [(e["path"].rsplit("/", 1)[-1], e["status"]) for e in fleet.control.requests(host)]
    assert log == [("system:executeSqlRequest", 429)] * 2 + [("system:executeSqlRequest", 200)]


# ------------------------------------------------------------------ connection options checked before any request


def test_password_in_url_is_refused_and_never_shown(fleet, run_playbook):
    """Credentials written into url: refused before any request, masked at -vvv (invocation included)."""
    key = fleet.control.create_company("Example LLC", "it@example.com")
    secret = "Url-Pa55word-7731"
    connection = password_connection()
    connection["url"] = "{{ mikopbx_url | regex_replace('^https://', 'https://admin:%s@') }}/" % secret

    run = run_playbook(fleet, [register(key)], connection=connection, verbosity=3)

    for host in fleet.names():
        result = run.result(host)
        assert result["failed"] is True
        assert "user name or password" in result["msg"] and "username and password" in result["msg"]
        assert fleet.var(host, "mikopbx_url") in result["msg"]  # the PBX is named, without the userinfo
        assert result["error"]["classification"] == "invalid_input"
        assert fleet.control.requests(host) == []
    assert secret not in run.output


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("ca_path", "/nonexistent/mikopbx-ca.pem", "ca_path /nonexistent/mikopbx-ca.pem does not exist"),
        ("timeout", 0, "timeout is 0"),
        ("retries", -1, "retries is -1"),
        ("url", "{{ mikopbx_url }}/admin-cabinet/", "url has the path '/admin-cabinet/'"),
        ("password", "", "password is empty"),
    ],
    ids=["ca_path", "timeout", "retries", "url-path", "empty-password"],
)
def test_unusable_connection_options_fail_before_any_request(fleet, run_playbook, option, value, expected):
    key = fleet.control.create_company("Example LLC", "it@example.com")
    connection = password_connection()
    connection[option] = value

    run = run_playbook(fleet, [register(key)], connection=connection)

    for host in fleet.names():
        result = run.result(host)
        assert result["failed"] is True
        assert expected in result["msg"] and "nothing was sent to the PBX" in result["msg"]
        assert fleet.var(host, "mikopbx_url") in result["msg"]
        assert fleet.control.requests(host) == []
