"""Unit tests of the fleet planning and report filters (hostvars as plain dicts)."""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.mikopbx.marketplace.plugins.filter.fleet_plan import (
    mikopbx_choose_license_key,
    mikopbx_replaced_hosts,
    mikopbx_seat_plan,
)
from ansible_collections.mikopbx.marketplace.plugins.filter.fleet_report import (
    mikopbx_fleet_report,
    mikopbx_report_markdown,
)

KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"
OTHER = "MIKO-ZZZZZ-YYYYY-XXXXX-WWWWW"
MASKED = "MIKO-*****-*****-*****-DDDDD"


def info(status="unbound", key_masked=None, captured=None, count=10, **extra):
    seats = {"count": count, "captured": captured, "free": None, "host_limit": 10} if captured is not None else None
    return {
        "changed": False,
        "generation": "v3",
        "version": "2026.1.223",
        "license_key_masked": key_masked,
        "binding_status": status,
        "seats": seats,
        "products": [],
        **extra,
    }


def host(key="", status="unbound", eligible=True, captured=None, **extra):
    return {
        "_mikopbx_host_key": key,
        "_mikopbx_eligible": eligible,
        "mikopbx_info": info(status, MASKED if key == KEY else None, captured),
        **extra,
    }


# ------------------------------------------------------------------ choose key


def test_given_key_wins_and_is_normalised():
    hv = {"a": host(OTHER, "ok")}
    choice = mikopbx_choose_license_key(hv, ["a"], " miko-aaaaa-bbbbb-ccccc-ddddd ")
    assert choice["key"] == KEY and choice["source"] == "variable" and choice["found_on"] == []


def test_key_discovered_on_the_seated_pbx():
    hv = {"a": host(), "b": host(KEY, "ok", captured=1), "c": host(OTHER, "binding_required")}
    choice = mikopbx_choose_license_key(hv, ["a", "b", "c"])
    assert choice == {
        "key": KEY,
        "license_key_masked": MASKED,
        "source": "discovered",
        "found_on": ["b"],
        "conflicts": [],
        "error": None,
    }


def test_restored_backup_key_used_when_nobody_holds_a_seat():
    hv = {"a": host(), "b": host(KEY, "binding_required")}
    assert mikopbx_choose_license_key(hv, ["a", "b"])["key"] == KEY


def test_two_seated_keys_are_a_conflict_without_revealing_them():
    hv = {"a": host(KEY, "ok"), "b": host(OTHER, "ok")}
    choice = mikopbx_choose_license_key(hv, ["a", "b"])
    assert choice["source"] == "conflict" and choice["key"] == ""
    assert KEY not in choice["error"] and OTHER not in choice["error"] and MASKED in choice["error"]


def test_nothing_found():
    assert mikopbx_choose_license_key({"a": host()}, ["a"])["source"] == "none"


def test_hosts_must_be_a_list():
    with pytest.raises(AnsibleFilterError):
        mikopbx_choose_license_key({}, "all")


# ------------------------------------------------------------------ seat plan


def test_seat_plan_fits():
    hv = {"a": host(KEY, "ok", captured=3), "b": host(), "c": host(KEY, "binding_required")}
    plan = mikopbx_seat_plan(hv, ["a", "b", "c"], KEY)
    assert plan["holders"] == ["a"] and plan["needs"] == ["b", "c"]
    assert (plan["count"], plan["captured"], plan["free"], plan["known"], plan["fits"]) == (10, 3, 7, True, True)
    assert plan["message"] is None


def test_seat_plan_exceeded_names_hosts_and_never_the_key():
    hv = {"a": host(KEY, "ok", captured=9), "b": host(), "c": host()}
    plan = mikopbx_seat_plan(hv, ["a", "b", "c"], KEY)
    assert not plan["fits"] and plan["free"] == 1
    assert "b, c" in plan["message"] and "nothing was changed" in plan["message"]
    assert "but 2 PBXs need a seat" in plan["message"]
    assert KEY not in json.dumps(plan)

    full = mikopbx_seat_plan({"a": host(KEY, "ok", captured=10), "b": host()}, ["a", "b"], KEY)
    assert not full["fits"] and "but 1 PBX needs a seat: b." in full["message"]


def test_seat_plan_skips_ineligible_and_foreign():
    hv = {"a": host(KEY, "ok", captured=1), "b": host(eligible=False), "c": host(OTHER, "ok")}
    plan = mikopbx_seat_plan(hv, ["a", "b", "c"], KEY)
    assert plan["needs"] == [] and plan["foreign"] == ["c"]
    assert mikopbx_seat_plan(hv, ["a", "b", "c"], KEY, replace_foreign_keys=True)["needs"] == ["c"]


def test_seat_plan_without_figures_assumes_the_default():
    hv = {name: host() for name in "abcdefghijk"}
    plan = mikopbx_seat_plan(hv, sorted(hv), KEY)
    assert not plan["known"] and plan["count"] == 10 and len(plan["needs"]) == 11 and not plan["fits"]


def test_seat_plan_host_limit():
    hv = {"a": host(KEY, "ok", captured=1)}
    hv["a"]["mikopbx_info"]["seats"]["count"] = 50
    assert mikopbx_seat_plan(hv, ["a"], KEY)["count"] == 10


def test_replaced_hosts_from_host_vars_and_run_time_pairs():
    hv = {"new-1": {"mikopbx_migrate_from": "old-1"}, "new-2": {}, "self": {"mikopbx_migrate_from": "self"}}
    assert mikopbx_replaced_hosts(hv, ["new-1", "new-2", "self"]) == {"old-1": ["new-1"]}
    both = mikopbx_replaced_hosts(hv, ["new-1", "new-2"], {"new-2": "old-1", "new-1": "old-1"})
    assert both == {"old-1": ["new-1", "new-2"]}
    assert mikopbx_replaced_hosts({}, []) == {}
    with pytest.raises(AnsibleFilterError):
        mikopbx_replaced_hosts(hv, ["new-1"], ["new-1", "old-1"])


# ------------------------------------------------------------------ report


def reach(ok=True):
    return {
        "changed": False,
        "reachable": ok,
        "method": "pbx_probe",
        "hosts": [
            {"host": "lic.miko.ru", "ok": True, "failed_stage": None, "detail": "", "intercepted": False},
            {"host": "lic.mikopbx.com", "ok": ok, "failed_stage": None if ok else "dns", "detail": "x"},
        ],
        "license_ping": {"ok": ok, "detail": ""},
        "first_failure": None if ok else {"host": "lic.mikopbx.com", "stage": "dns", "detail": "x"},
        "msg": "ok" if ok else "the PBX cannot reach every licensing host",
    }


def fleet_hostvars():
    expiring = info("ok", MASKED, 2)
    expiring["products"] = [{"name": "Module X", "expired_now": False, "expires_in_days": 5, "trial": True}]
    return {
        "pbx-001": {
            "mikopbx_info": expiring,
            "mikopbx_reachability": reach(),
            "mikopbx_registration": {"changed": True, "action": "registered_trial"},
            "mikopbx_binding": {"skipped": True},
            "mikopbx_modules": {
                "changed": False,
                "modules": [
                    {"uniqid": "ModuleA", "enabled": False, "disable_reason": "licence"},
                    {"uniqid": "ModuleB", "enabled": False, "disable_reason": "user"},
                    {"uniqid": "ModuleC", "enabled": True, "disable_reason": "licence"},
                ],
                "required_problems": [{"uniqid": "ModuleD", "problem": "not_installed"}],
            },
            "mikopbx_url": "https://127.0.0.1:1",
        },
        "pbx-002": {
            "mikopbx_info": info("unbound"),
            "mikopbx_reachability": reach(),
            "mikopbx_binding": {
                "changed": True,
                "binding_status": "unbound",
                "binding_status_after": "ok",
                "actions": ["apply_key"],
                "license_key_masked": MASKED,
                "seats": {"count": 10, "captured": 3, "free": 7, "host_limit": 10},
            },
        },
        "pbx-003": {
            "mikopbx_info": info("unbound"),
            "mikopbx_reachability": reach(False),
            "mikopbx_skip_reason": "licensing hosts unreachable from the PBX",
        },
        "pbx-004": {
            "mikopbx_info": {"failed": True, "msg": "PBX said %s is wrong" % KEY, "error": {"classification": "auth"}},
        },
    }


def test_report_totals_hosts_and_violations():
    report = mikopbx_fleet_report(
        fleet_hostvars(),
        ["pbx-001", "pbx-002", "pbx-003", "pbx-004", "pbx-005"],
        fleet={"license_key_masked": MASKED, "key_source": "registered", "registered_on": "pbx-001"},
    )
    totals = report["totals"]
    assert totals["hosts"] == 5 and totals["not_run"] == 1
    assert totals["bound"] == 2 and totals["unbound"] == 2
    assert totals["licensing_unreachable"] == 1 and totals["api_unreachable"] == 1
    assert totals["licence_disabled_modules"] == 1 and totals["required_module_problems"] == 1
    assert totals["hosts_expiring"] == 1 and totals["registered"] == 2
    assert report["fleet"]["seats"]["captured"] == 3

    hosts = {h["name"]: h for h in report["hosts"]}
    assert hosts["pbx-001"]["modules"]["disabled"] == {"licence": ["ModuleA"], "user": ["ModuleB"]}
    assert hosts["pbx-002"]["registration"]["action"] == "applied_key"
    assert hosts["pbx-002"]["binding"] == {
        "before": "unbound",
        "status": "ok",
        "changed": True,
        "seats": {"count": 10, "captured": 3, "free": 7, "host_limit": 10},
        "manual_step": None,
    }
    assert hosts["pbx-003"]["reachability"]["hosts"][1]["failed_stage"] == "dns"
    assert hosts["pbx-004"]["state"] == "error" and hosts["pbx-004"]["errors"][0]["classification"] == "auth"
    assert hosts["pbx-005"]["state"] == "not_run"

    violated = {v["threshold"]: v["hosts"] for v in report["violations"]}
    assert violated["unreachable"] == ["pbx-003"]
    assert violated["unbound"] == ["pbx-003", "pbx-004"]
    assert "expiring" not in violated

    # No clear key anywhere, even when a PBX message quoted one.
    assert KEY not in json.dumps(report)


def test_a_licence_error_fixed_by_the_bind_of_the_run_is_not_reported():
    hostvars = fleet_hostvars()
    error = {"classification": "licence:2008", "code": 2008, "message": "no free seat for this machine"}
    hostvars["pbx-002"]["mikopbx_info"]["licence_error"] = error
    hostvars["pbx-003"]["mikopbx_info"]["licence_error"] = error
    hosts = {h["name"]: h for h in mikopbx_fleet_report(hostvars, ["pbx-002", "pbx-003"])["hosts"]}
    assert hosts["pbx-002"]["licence_error"] is None  # bound in this run, confirmed ok
    assert hosts["pbx-003"]["licence_error"] == error  # left out: the error stands


def test_a_missing_inventory_setting_is_not_counted_as_an_unreachable_api():
    hostvars = {
        "pbx-001": {"mikopbx_info": info("ok", MASKED, 1), "mikopbx_reachability": reach()},
        "pbx-002": {
            "mikopbx_info": {"failed": True, "msg": "parameters are required together: username, password"},
            "mikopbx_settings_problem": "no credentials; set mikopbx_api_key (2026.1) or mikopbx_username and ...",
            "mikopbx_skip_reason": "inventory settings: no credentials; set mikopbx_api_key (2026.1) or ...",
        },
        "pbx-003": {
            "mikopbx_info": {"failed": True, "msg": "cannot connect", "error": {"classification": "unreachable"}},
            "mikopbx_skip_reason": "licence facts could not be read: cannot connect",
        },
    }
    report = mikopbx_fleet_report(hostvars, ["pbx-001", "pbx-002", "pbx-003"])
    assert report["totals"]["api_unreachable"] == 1 and report["totals"]["settings_problems"] == 1
    violated = {v["threshold"]: v["hosts"] for v in report["violations"]}
    assert violated["api_unreachable"] == ["pbx-003"]
    assert violated["errors"] == ["pbx-002", "pbx-003"]  # a PBX with a missing setting still fails the run

    hosts = {h["name"]: h for h in report["hosts"]}
    assert hosts["pbx-002"]["state"] == "error"
    assert [e["classification"] for e in hosts["pbx-002"]["errors"]] == ["settings"]
    assert hosts["pbx-002"]["errors"][0]["message"].startswith("no credentials; set mikopbx_api_key")
    assert hosts["pbx-003"]["settings_problem"] is None

    text = mikopbx_report_markdown(report)
    assert "parameters are required together" not in text
    row = next(line for line in text.splitlines() if line.startswith("| pbx-003 "))
    assert row.count("cannot connect") == 1  # the reason it was left out quotes the error: said once


def test_an_old_machine_replaced_by_another_is_not_counted_as_unbound():
    hostvars = {
        "old": {
            "mikopbx_info": info("unbound"),
            "mikopbx_replaced_by": ["new"],
            "mikopbx_skip_reason": "replaced by new",
        },
        "new": {"mikopbx_info": info("ok", MASKED, 1)},
        "other": {"mikopbx_info": info("unbound")},
    }
    report = mikopbx_fleet_report(hostvars, ["old", "new", "other"])
    assert report["totals"]["unbound"] == 1 and report["totals"]["replaced"] == 1
    assert {v["threshold"]: v["hosts"] for v in report["violations"]}["unbound"] == ["other"]
    hosts = {h["name"]: h for h in report["hosts"]}
    assert hosts["old"]["replaced_by"] == ["new"] and hosts["old"]["state"] == "ok"
    assert hosts["old"]["skipped"] == "replaced by new"


def test_thresholds_can_be_relaxed_and_validated():
    report = mikopbx_fleet_report(fleet_hostvars(), ["pbx-003"], fail_on={"unreachable": 1, "unbound": None})
    assert report["violations"] == []
    with pytest.raises(AnsibleFilterError):
        mikopbx_fleet_report(fleet_hostvars(), ["pbx-003"], fail_on={"nonsense": 1})
    with pytest.raises(AnsibleFilterError):
        mikopbx_fleet_report(fleet_hostvars(), ["pbx-003"], fail_on={"unbound": -1})


def test_markdown():
    report = mikopbx_fleet_report(fleet_hostvars(), ["pbx-001", "pbx-002", "pbx-003", "pbx-004"])
    text = mikopbx_report_markdown(report)
    assert text.startswith("# MikoPBX fleet report")
    assert "| pbx-003 | warning |" in text and "lic.mikopbx.com FAIL at dns" in text
    assert "licence: ModuleA" in text and "Module X in 5 d" in text
    assert "- unreachable: 1 > 0 (pbx-003)" in text
    assert KEY not in text
    rows = [line for line in text.splitlines() if line.startswith("| pbx-")]
    assert len(rows) == 4 and all(row.count(" | ") == 11 for row in rows)
    with pytest.raises(AnsibleFilterError):
        mikopbx_report_markdown({"nope": 1})


def test_foreign_key_left_alone_is_explained():
    hv = {"a": {"mikopbx_info": info("ok", "MIKO-*****-*****-*****-WWWWW", 1)}}
    report = mikopbx_fleet_report(hv, ["a"], fleet={"license_key_masked": MASKED})
    assert report["hosts"][0]["skipped"].startswith("stores a different licence key (MIKO-*****-*****-*****-WWWWW)")
    assert report["hosts"][0]["binding"]["status"] == "key_mismatch"
    assert report["totals"]["unbound"] == 1
