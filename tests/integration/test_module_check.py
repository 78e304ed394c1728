"""mikopbx_module_check against the emulated fleet (FC-12, FC-06), both API generations.

The licence-disabled module is switched off by the PBX itself (the emulator's hourly licence check
with an expired product, licence error 2011), not written into the table by the test.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

MODULE = "mikopbx.marketplace.mikopbx_module_check"
USERS_PRODUCT = {"id": 101, "name": "Users and access rights", "trial": False}
USERS_FEATURE = {"id": 201, "name": "Users and access rights", "count": 10, "counteach": 1}


def fc12_rows(generation: str) -> list[dict[str, Any]]:
    """Four disabled modules (user, exception, crash loop on v3; the licence one is switched off by the
    PBX's licence check), plus an enabled module whose reason field still says DisabledByLicense."""
    rows = [
        # Enabled now; the PBX's licence check switches it off (product expired: 2011).
        {"uniqid": "ModuleUsersUI", "disabled": "0", "disableReason": "", "disableReasonText": ""},
        {
            "uniqid": "ModuleBackup",
            "disabled": "1",
            "disableReason": "" if generation == "v3" else "DisabledByUser",
            "disableReasonText": "",
        },
        {
            "uniqid": "ModuleBitrix24Integration",
            "disabled": "1",
            "disableReason": "DisabledByException",
            "disableReasonText": "Call to a member function getValue() on null",
        },
        {
            "uniqid": "ModuleTemplate",
            "disabled": "0",
            "disableReason": "DisabledByLicense",
            "disableReasonText": "an old licence error",
        },
    ]
    if generation == "v3":
        rows.append(
            {
                "uniqid": "ModuleAutoDialer",
                "disabled": "1",
                "disableReason": "DisabledByCrashLoop",
                "disableReasonText": "restarted 5 times within 60 seconds",
            }
        )
    return rows


def users_product(expired: str) -> dict[str, Any]:
    return dict(USERS_PRODUCT, expired=expired, features=[dict(USERS_FEATURE)])


def prepare_fc12(fleet: Any, host: str) -> str:
    """Company key with an expired module product, bound to ``host``; modules as FC-12; licence check run."""
    generation = fleet.var(host, "mikopbx_generation")
    key = fleet.control.create_company(
        companyname="Module Check LLC", email="%s@example.com" % host, products=[users_product("2020-01-01")]
    )
    fleet.control.seed_key(host, key, bind=True)
    fleet.control._call("PUT", "/control/pbx/%s/modules" % host, fc12_rows(generation))
    switched_off = fleet.control._call("POST", "/control/pbx/%s/license-check" % host)
    assert switched_off == {"disabled": ["ModuleUsersUI"]}
    fleet.control.clear_requests(host)
    return key


def renew_licence(fleet: Any, key: str) -> None:
    """The operator renews the module licence in the cabinet."""
    base = {
        "id": 11,
        "name": "MikoPBX",
        "expired": "",
        "features": [{"id": 33, "name": "MikoPBX base", "count": 10, "counteach": 1}],
    }
    fleet.control._call("PATCH", "/control/licensing/keys/%s" % key, {"products": [base, users_product("")]})


def by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["uniqid"]: m for m in result["modules"]}


def log(fleet: Any, host: str) -> list[dict[str, Any]]:
    return fleet.control.requests(host)


def writes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("kind") == "write"]


@pytest.mark.parametrize("generation", ["v3", "legacy"])
def test_fc12_reasons_remediation_and_check_mode(start_fleet, run_playbook, generation):
    fleet = start_fleet(count=1, generation=generation, time_scale=0.05)
    host = fleet.first(generation)
    key = prepare_fc12(fleet, host)

    # --- 1. the report: per-module reason and text, only the disabled licence module is a problem
    run = run_playbook(fleet, [{"name": "check", MODULE: {"required": ["ModuleTemplate"]}}])
    result = run.result(host, "check")
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is False
    assert result["generation"] == generation

    mods = by_id(result)
    users = mods["ModuleUsersUI"]
    assert users["enabled"] is False
    assert users["disable_reason"] == "licence"
    assert users["disable_reason_raw"] == "DisabledByLicense"
    assert users["licence_problem"] is True
    assert "2011" in (users["disable_reason_text"] or "")

    assert mods["ModuleBackup"]["disable_reason"] == "user"
    assert mods["ModuleBackup"]["licence_problem"] is False
    assert mods["ModuleBitrix24Integration"]["disable_reason"] == "exception"
    assert "getValue" in mods["ModuleBitrix24Integration"]["disable_reason_text"]
    if generation == "v3":
        assert mods["ModuleAutoDialer"]["disable_reason"] == "crash_loop"
        assert mods["ModuleAutoDialer"]["licence_problem"] is False

    stale = mods["ModuleTemplate"]
    assert stale["enabled"] is True
    assert stale["licence_problem"] is False
    assert stale["disable_reason"] is None
    if generation == "v3":
        # The SQL read sees the stale reason; the 2024.1 page shows no icon for an enabled module.
        assert stale["disable_reason_raw"] == "DisabledByLicense"

    assert [p["uniqid"] for p in result["licence_problems"]] == ["ModuleUsersUI"]
    assert result["required_problems"] == []
    assert result["summary"]["disabled"] == (4 if generation == "v3" else 3)
    assert result["marketplace"]["status"] == "ok"

    # Cost: v3 one SQL + one marketplace request (API key); legacy login + one page + one marketplace.
    entries = log(fleet, host)
    assert writes(entries) == []
    reads = [e for e in entries if e["kind"] == "read"]
    assert len(reads) == 2, entries
    assert len([e for e in entries if e["kind"] == "auth"]) == (0 if generation == "v3" else 1)

    # --- 2. FC-06: check mode with remediation sends no write request
    fleet.control.clear_requests(host)
    run = run_playbook(fleet, [{"name": "check", MODULE: {"remediate": True}}], check=True)
    result = run.result(host, "check")
    assert result["changed"] is True
    assert result["remediation"] == [
        {
            "uniqid": "ModuleUsersUI",
            "attempted": False,
            "captured": False,
            "result": "skipped_check_mode",
            "message": "check mode: would try once to capture the licence feature and enable the module; without "
            "a paid licence MikoPBX would start the product's one-time trial for it",
        }
    ]
    assert "may start the product's one-time trial" in result["msg"]
    assert writes(log(fleet, host)) == []
    assert by_id(result)["ModuleUsersUI"]["enabled"] is False

    # --- 3. remediation while the licence is still expired: one attempt, clear message, left alone
    for attempt in (1, 2):
        fleet.control.clear_requests(host)
        run = run_playbook(fleet, [{"name": "fix", MODULE: {"remediate": True}}])
        result = run.result(host, "fix")
        assert result["changed"] is False, attempt
        [entry] = result["remediation"]
        assert entry["uniqid"] == "ModuleUsersUI"
        assert entry["attempted"] is True
        assert entry["result"] == "licence_unavailable"
        assert "left disabled" in entry["message"]
        assert by_id(result)["ModuleUsersUI"]["licence_problem"] is True

        entries = log(fleet, host)
        capture = [e for e in entries if "captureFeatureForProductId" in e["path"]]
        enable = [e for e in entries if "nable" in e["path"] and "getModuleInfo" not in e["path"]]
        assert len(capture) == 1, entries
        assert enable == [], entries
        state = {m["uniqid"]: m for m in fleet.control.state(host)["modules"]}
        assert state["ModuleUsersUI"]["disabled"] == "1"
        # Nothing else was touched.
        assert state["ModuleBackup"]["disabled"] == "1" and state["ModuleBitrix24Integration"]["disabled"] == "1"

    # --- 4. the licence is renewed: remediation re-enables the module, once
    renew_licence(fleet, key)
    fleet.control.clear_requests(host)
    task = {"name": "fix", MODULE: {"remediate": True, "fail_on": ["licence"]}}
    run = run_playbook(fleet, [task], diff=True)
    result = run.result(host, "fix")
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is True
    assert result["diff"]["after"]["modules"] == {"ModuleUsersUI": {"enabled": True, "disable_reason": None}}
    [entry] = result["remediation"]
    assert entry["result"] == "enabled" and entry["captured"] is True
    assert "one-time trial" in entry["message"] and "one-time trial" in result["msg"]
    assert by_id(result)["ModuleUsersUI"]["enabled"] is True
    assert result["licence_problems"] == []
    entries = log(fleet, host)
    assert len([e for e in entries if "captureFeatureForProductId" in e["path"]]) == 1
    assert len([e for e in entries if e["path"].endswith(("ModuleUsersUI:enable", "enableModule"))]) == 1
    assert {m["uniqid"]: m for m in fleet.control.state(host)["modules"]}["ModuleUsersUI"]["disabled"] == "0"
    # The user-disabled, exception and crash-loop modules were left as they were.
    state = {m["uniqid"]: m for m in fleet.control.state(host)["modules"]}
    assert state["ModuleBackup"]["disabled"] == "1"
    assert state["ModuleBitrix24Integration"]["disabled"] == "1"

    # --- 5. idempotent: nothing left to remediate, no write
    fleet.control.clear_requests(host)
    run = run_playbook(fleet, [{"name": "fix", MODULE: {"remediate": True}}])
    result = run.result(host, "fix")
    assert result["changed"] is False and result["remediation"] == []
    assert writes(log(fleet, host)) == []


@pytest.mark.parametrize("generation", ["v3", "legacy"])
def test_fail_on_and_required_and_query(start_fleet, run_playbook, generation):
    fleet = start_fleet(count=1, generation=generation, time_scale=0.05)
    host = fleet.first(generation)
    prepare_fc12(fleet, host)

    user_ok = {"required": ["ModuleTemplate"], "query": "[?disable_reason=='user'].uniqid", "check_marketplace": False}
    tasks = [
        {"name": "licence", MODULE: {"fail_on": ["licence"], "check_marketplace": False}},
        {"name": "required", MODULE: {"required": ["ModuleUsersUI", "ModuleMissing"], "check_marketplace": False}},
        {"name": "user_ok", MODULE: user_ok},
    ]
    run = run_playbook(fleet, tasks)

    licence = run.result(host, "licence")
    assert licence["failed"] is True
    assert "ModuleUsersUI" in licence["msg"]
    assert licence["modules"], "the report is returned with the failure"

    required = run.result(host, "required")
    assert required["failed"] is True
    assert [(p["uniqid"], p["problem"]) for p in required["required_problems"]] == [
        ("ModuleUsersUI", "licence"),
        ("ModuleMissing", "not_installed"),
    ]

    user_ok = run.result(host, "user_ok")
    assert user_ok.get("failed") is not True, user_ok.get("msg")
    assert user_ok["selected"] == ["ModuleBackup"]
    assert user_ok["marketplace"]["status"] == "skipped"


@pytest.mark.parametrize(
    "fault,status",
    [({"name": "dns_failure"}, "unreachable"), ({"name": "licensing_5xx"}, "upstream_error")],
)
def test_marketplace_unreachable_versus_upstream_error(start_fleet, run_playbook, fault, status):
    fleet = start_fleet(count=2, generation="mixed", time_scale=0.05)
    for host in fleet.names():
        fleet.control.add_fault(pbx=host, **fault)
    run = run_playbook(fleet, [{"name": "check", MODULE: {}}])
    for host in fleet.names():
        result = run.result(host, "check")
        assert result.get("failed") is not True, result.get("msg")
        assert result["marketplace"]["status"] == status, result["marketplace"]
        assert result["marketplace"]["message"]
