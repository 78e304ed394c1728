"""mikopbx_reachability against the emulated fleet (FC-13, FC-14).

The emulator answers the fixed probe command per host from its faults, exactly as design.md §5
describes, so these tests show that the module runs the check on the PBX (the probe request is in
that PBX's request log) and names the first failing stage per host; the controller itself has a
working network in all of them.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

MODULE = "mikopbx.marketplace.mikopbx_reachability"
HOSTS = ["lic.miko.ru", "lic.mikopbx.com"]
TASK = {"name": "reach", MODULE: {"probe_timeout": 2}}


def stages(result: dict[str, Any]) -> dict[str, str | None]:
    return {h["host"]: h["failed_stage"] for h in result["hosts"]}


def probe_requests(fleet: Any, host: str) -> list[dict[str, Any]]:
    return [e for e in fleet.control.requests(host) if e["path"].endswith("system:executeBashCommand")]


def no_writes(fleet: Any, host: str) -> None:
    assert [e for e in fleet.control.requests(host) if e["kind"] == "write"] == []


def test_fc13_fc14_stages_per_pbx_and_host(start_fleet, run_playbook):
    """Four v3 PBXs, one fault each (and one healthy), checked in one play."""
    fleet = start_fleet(count=5, generation="v3", time_scale=0.05)
    healthy, dns, blocked, intercepted, one_host = fleet.names()
    fleet.control.add_fault("dns_failure", pbx=dns)
    fleet.control.add_fault("egress_blocked", pbx=blocked)
    fleet.control.add_fault("tls_intercept", pbx=intercepted)
    fleet.control.add_fault("egress_blocked", pbx=one_host, hosts=["lic.miko.ru"])
    for host in fleet.names():
        fleet.control.clear_requests(host)

    run = run_playbook(fleet, [TASK])

    ok = run.result(healthy, "reach")
    assert ok.get("failed") is not True, ok.get("msg")
    assert ok["method"] == "pbx_probe"
    assert ok["reachable"] is True
    assert stages(ok) == {"lic.miko.ru": None, "lic.mikopbx.com": None}
    assert ok["license_ping"]["ok"] is True
    assert ok["first_failure"] is None

    # FC-13: broken DNS on the PBX -> dns stage, for every host; the PBX's own ping fails too.
    result = run.result(dns, "reach")
    assert result["reachable"] is False
    assert stages(result) == {"lic.miko.ru": "dns", "lic.mikopbx.com": "dns"}
    assert result["first_failure"]["stage"] == "dns" and result["first_failure"]["host"] == "lic.miko.ru"
    assert result["license_ping"]["ok"] is False
    assert result.get("failed") is not True  # a report-type check by default

    # FC-13: no route (egress blocked) -> tcp stage.
    result = run.result(blocked, "reach")
    assert stages(result) == {"lic.miko.ru": "tcp", "lic.mikopbx.com": "tcp"}
    assert all(h["curl_exit"] == 28 for h in result["hosts"])

    # FC-14 (a): TLS interception -> tls stage, flagged, although TCP connected.
    result = run.result(intercepted, "reach")
    assert stages(result) == {"lic.miko.ru": "tls", "lic.mikopbx.com": "tls"}
    assert all(h["intercepted"] for h in result["hosts"])
    assert "interception" in result["hosts"][0]["detail"]

    # FC-14 (c): one licensing host allowed, another blocked -> per-host results.
    result = run.result(one_host, "reach")
    assert stages(result) == {"lic.miko.ru": "tcp", "lic.mikopbx.com": None}
    assert result["reachable"] is False
    assert result["first_failure"]["host"] == "lic.miko.ru"
    # The licence library talks to lic.mikopbx.com, which is open: its own verdict is fine.
    assert result["license_ping"]["ok"] is True

    # The check ran on each PBX (one probe request in each PBX's log) and wrote nothing.
    for host in fleet.names():
        assert len(probe_requests(fleet, host)) == 1
        no_writes(fleet, host)


def test_only_the_faulty_pbx_fails_with_fail_on_unreachable(start_fleet, run_playbook):
    fleet = start_fleet(count=2, generation="v3", time_scale=0.05)
    good, bad = fleet.names()
    fleet.control.add_fault("egress_blocked", pbx=bad, hosts=["lic.mikopbx.com"])

    task = {"name": "reach", MODULE: {"probe_timeout": 2, "hosts": ["lic.mikopbx.com"], "fail_on_unreachable": True}}
    run = run_playbook(fleet, [task])

    assert run.result(good, "reach").get("failed") is not True
    result = run.result(bad, "reach")
    assert result["failed"] is True
    assert result["first_failure"] == {
        "host": "lic.mikopbx.com",
        "stage": "tcp",
        "detail": result["hosts"][0]["detail"],
    }
    assert "lic.mikopbx.com: tcp stage failed" in result["msg"]


def test_check_mode_and_bad_hosts(start_fleet, run_playbook):
    fleet = start_fleet(count=1, generation="v3", time_scale=0.05)
    host = fleet.first("v3")
    fleet.control.clear_requests(host)

    tasks = [
        {"name": "check_mode", MODULE: {"probe_timeout": 2}, "check_mode": True},
        {"name": "bad_host", MODULE: {"hosts": ["lic.mikopbx.com; reboot"]}},
        {"name": "bad_probe_timeout", MODULE: {"probe_timeout": 0}},
    ]
    run = run_playbook(fleet, tasks)

    result = run.result(host, "check_mode")
    assert result["reachable"] is True and result["changed"] is False
    bad = run.result(host, "bad_host")
    assert bad["failed"] is True
    assert "not a valid DNS name" in bad["msg"]
    bad = run.result(host, "bad_probe_timeout")
    assert bad["failed"] is True
    assert "probe_timeout must be between 1 and 20, got 0" in bad["msg"]  # the option's name, not "timeout"
    # Only the check-mode task reached the PBX: one probe and one ping, nothing written.
    assert len(probe_requests(fleet, host)) == 1
    no_writes(fleet, host)


def test_legacy_is_license_ping_only(start_fleet, run_playbook):
    fleet = start_fleet(count=2, generation="legacy", time_scale=0.05)
    good, bad = fleet.names()
    fleet.control.add_fault("egress_blocked", pbx=bad)

    run = run_playbook(fleet, [TASK])

    result = run.result(good, "reach")
    assert result["generation"] == "legacy"
    assert result["method"] == "license_ping_only"
    assert result["hosts"] == []
    assert result["reachable"] is True
    assert result["msg"].count("no per-host probe") == 1, result["msg"]
    assert "mikopbx-probe-v1" in result["probe_command"]

    result = run.result(bad, "reach")
    assert result["method"] == "license_ping_only"
    assert result["reachable"] is False
    assert result["first_failure"]["stage"] == "license_ping"
    assert result["license_ping"]["ok"] is False
    assert result["msg"].count("no per-host probe") == 1, result["msg"]
    for host in (good, bad):
        no_writes(fleet, host)
        assert [e for e in fleet.control.requests(host) if e["path"].endswith("license/ping")]


def test_restricted_key_falls_back_to_license_ping_only(start_fleet, run_playbook, pbx_client):
    """A key that may read the licence API but not run commands: warning + licence ping only."""
    fleet = start_fleet(count=1, generation="v3", time_scale=0.05)
    host = fleet.first("v3")
    admin = pbx_client(fleet, host)
    restricted = admin.request("POST", "/pbxcore/api/v3/api-keys:generateKey").data["key"]
    admin.request(
        "POST",
        "/pbxcore/api/v3/api-keys",
        data={"description": "licence read only", "key": restricted, "allowed_paths": {"/api/v3/license": "read"}},
    )
    fleet.control.clear_requests(host)

    connection = {"url": "{{ mikopbx_url }}", "api_key": restricted, "ca_path": "{{ mikopbx_ca_path }}"}
    run = run_playbook(fleet, [TASK], connection=connection, verbosity=3)

    result = run.result(host, "reach")
    assert result.get("failed") is not True, result.get("msg")
    assert result["method"] == "license_ping_only"
    assert result["hosts"] == []
    assert result["license_ping"]["ok"] is True
    assert result["reachable"] is True
    assert "only its licence ping was checked" in run.output
    assert restricted not in run.output
    no_writes(fleet, host)


def test_no_secret_in_verbose_output(start_fleet, run_playbook):
    fleet = start_fleet(count=2, generation="mixed", time_scale=0.05)
    key = fleet.control.create_company(companyname="Secret LLC", email="secret@example.com")
    for host in fleet.names():
        fleet.control.seed_key(host, key, bind=True)
        fleet.control.add_fault("tls_intercept", pbx=host, hosts=["lic.miko.ru"])

    # The module check reads the 2024.1 admin page, which carries the licence key in clear.
    modules = {"name": "modules", "mikopbx.marketplace.mikopbx_module_check": {"fail_on": []}}
    run = run_playbook(fleet, [TASK, modules], verbosity=3)

    secrets = [key]
    for host in fleet.names():
        assert run.result(host, "reach").get("failed") is not True
        assert run.result(host, "modules").get("failed") is not True
        secrets += [fleet.var(host, "mikopbx_password"), fleet.var(host, "mikopbx_api_key")]
    for secret in filter(None, secrets):
        assert secret not in run.output
