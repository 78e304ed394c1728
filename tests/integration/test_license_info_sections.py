"""mikopbx_license_info with its optional sections (reachability, modules) against the emulated fleet.

The sections exist so that a fleet run reads a PBX's licence facts, its reachability of the licensing
hosts and its module table in one module run. These tests show that each section says exactly what the
dedicated module (mikopbx_reachability, mikopbx_module_check) says about the same PBX, on both API
generations, that the whole run is read-only and costs few requests, and that a failing section is
reported in the section without losing the licence facts.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

INFO = "mikopbx.marketplace.mikopbx_license_info"
REACH = "mikopbx.marketplace.mikopbx_reachability"
CHECK = "mikopbx.marketplace.mikopbx_module_check"
REQUIRED = ["ModuleUsersUI", "ModuleBackup", "ModuleMissing"]
SECTIONS = {"reachability": {"probe_timeout": 2}, "modules": {"required": REQUIRED}}

# Switched off by the PBX for lack of a licence, by the administrator, and one that runs.
MODULE_ROWS = [
    {"uniqid": "ModuleUsersUI", "disabled": "1", "disableReason": "DisabledByLicense", "disableReasonText": ""},
    {"uniqid": "ModuleBackup", "disabled": "1", "disableReason": "DisabledByUser", "disableReasonText": ""},
    {"uniqid": "ModuleTemplate", "disabled": "0", "disableReason": "", "disableReasonText": ""},
]
MODULE_FIELDS = ("modules", "summary", "licence_problems", "required_problems")
REACH_FIELDS = ("reachable", "method", "hosts", "license_ping", "first_failure", "probe_command")


def prepare(fleet: Any) -> tuple[str, str, str]:
    """A bound key everywhere, MODULE_ROWS on every PBX, licensing hosts blocked on the second 2026.1 PBX."""
    v3_ok, legacy, v3_blocked = fleet.names()
    key = fleet.control.create_company("Sections LLC", "sections@example.com")
    for host in fleet.names():
        fleet.control.seed_key(host, key, bind=True)
        fleet.control._call("PUT", "/control/pbx/%s/modules" % host, MODULE_ROWS)
    fleet.control.add_fault("egress_blocked", pbx=v3_blocked)
    return v3_ok, legacy, v3_blocked


def test_sections_match_the_dedicated_modules_on_both_generations(start_fleet, run_playbook):
    fleet = start_fleet(count=3, generation="mixed", time_scale=0.05)
    v3_ok, legacy, v3_blocked = prepare(fleet)
    assert [fleet.var(h, "mikopbx_generation") for h in (v3_ok, legacy, v3_blocked)] == ["v3", "legacy", "v3"]
    for host in fleet.names():
        fleet.control.clear_requests(host)

    combined = run_playbook(fleet, [{"name": "info", INFO: SECTIONS}])

    # One module run per PBX; nothing written; on 2026.1 with an API key: settings, licence info,
    # probe, licence ping, module table.
    for host in fleet.names():
        log = fleet.control.requests(host)
        assert [e for e in log if e["kind"] == "write"] == [], log
        if fleet.var(host, "mikopbx_generation") == "v3":
            assert len(log) <= 5, log

    dedicated = run_playbook(
        fleet,
        [
            {"name": "reach", REACH: {"probe_timeout": 2}},
            {"name": "check", CHECK: {"required": REQUIRED, "check_marketplace": False, "fail_on": []}},
        ],
    )

    for host in fleet.names():
        info = combined.result(host, "info")
        assert info.get("failed") is not True, info.get("msg")
        # The blocked PBX cannot ask the licensing service either.
        assert info["binding_status"] == ("unknown" if host == v3_blocked else "ok"), info
        reach, check = dedicated.result(host, "reach"), dedicated.result(host, "check")
        assert {f: info["reachability"][f] for f in REACH_FIELDS} == {f: reach[f] for f in REACH_FIELDS}
        assert {f: info["modules"][f] for f in MODULE_FIELDS} == {f: check[f] for f in MODULE_FIELDS}
        assert info["modules"]["marketplace"]["status"] == "skipped"
        assert info["modules"]["remediation"] == []
        # The licence-disabled module is found, and the required ones are judged.
        assert [p["uniqid"] for p in info["modules"]["licence_problems"]] == ["ModuleUsersUI"]
        assert {p["uniqid"]: p["problem"] for p in info["modules"]["required_problems"]} == {
            "ModuleUsersUI": "licence",
            "ModuleBackup": "disabled",
            "ModuleMissing": "not_installed",
        }

    assert combined.result(v3_ok, "info")["reachability"]["reachable"] is True
    blocked = combined.result(v3_blocked, "info")["reachability"]
    assert blocked["reachable"] is False and blocked["first_failure"]["stage"] == "tcp", blocked
    # 2024.1 has no command API: the licence ping only, as mikopbx_reachability does.
    assert combined.result(legacy, "info")["reachability"]["method"] == "license_ping_only"


def test_without_sections_nothing_extra_is_asked(start_fleet, run_playbook):
    fleet = start_fleet(count=1, generation="v3", time_scale=0.05)
    host = fleet.names()[0]
    fleet.control.clear_requests(host)

    run = run_playbook(fleet, [{"name": "info", INFO: {}}])

    result = run.result(host, "info")
    assert "reachability" not in result and "modules" not in result
    paths = [e["path"] for e in fleet.control.requests(host)]
    assert not [p for p in paths if "executeBashCommand" in p or "license:ping" in p], paths


def test_a_failing_section_keeps_the_licence_facts(start_fleet, run_playbook):
    """The PBX's queue refuses the probe: the reachability section says so, the task and the facts stand."""
    fleet = start_fleet(count=1, generation="v3", time_scale=0.05)
    host = fleet.names()[0]
    key = fleet.control.create_company("Busy Probe LLC", "busy@example.com")
    fleet.control.seed_key(host, key, bind=True)
    fleet.control.add_fault("queue_full", pbx=host, count=20, match="executeBashCommand")

    run = run_playbook(fleet, [{"name": "info", INFO: SECTIONS}], verbosity=3)

    result = run.result(host, "info")
    assert result.get("failed") is not True, result.get("msg")
    assert result["binding_status"] == "ok"
    section = result["reachability"]
    assert section["failed"] is True
    assert "reachability of the licensing servers" in section["msg"], section["msg"]
    assert section["error"]["status"] == 503, section["error"]
    assert result["modules"]["summary"]["total"] > 0
    assert key not in run.output
    assert fleet.var(host, "mikopbx_api_key") not in run.output


def test_bad_probe_options_fail_before_any_request(start_fleet, run_playbook):
    fleet = start_fleet(count=1, generation="v3", time_scale=0.05)
    host = fleet.names()[0]
    fleet.control.clear_requests(host)

    run = run_playbook(
        fleet,
        [{"name": "info", INFO: {"reachability": {"hosts": ["https://lic.mikopbx.com/"]}}}],
    )

    result = run.result(host, "info")
    assert result["failed"] is True
    assert result["msg"].startswith("reachability: ") and "nothing was sent" in result["msg"], result["msg"]
    assert fleet.control.requests(host) == []
