"""Fleet invariants of a real (or emulated) MikoPBX fleet, from the audit report.

Environment: MIKOPBX_AUDIT_INVENTORY (the inventory audited), MIKOPBX_AUDIT_REQUIRED_MODULES
(comma-separated uniqids that must be enabled), MIKOPBX_AUDIT_EXPIRY_DAYS (default 30).
Against the emulator the tests also check that the audit sent no write request.
"""

from __future__ import annotations

import functools

import fleet_lib


@functools.cache
def report() -> dict:
    """The report of the check-mode converge (a check run writes under its own name)."""
    rep = fleet_lib.report(fleet_lib.CHECK_REPORT_NAME)
    assert rep["fleet"]["check_mode"] is True
    return rep


def entry(host) -> dict:
    return fleet_lib.report_host(report(), host.backend.get_hostname())


def test_audit_changed_nothing(host):
    assert entry(host)["changed"] is False
    ctl = fleet_lib.control()
    if ctl is not None:
        assert ctl.requests_summary()[host.backend.get_hostname()]["write"] == 0


def test_pbx_answered(host):
    e = entry(host)
    assert e["api_ok"], "; ".join(err["message"] for err in e["errors"]) or "no answer"


def test_one_company_key_for_the_fleet(host):
    keys = {h["license_key_masked"] for h in report()["hosts"] if h["api_ok"]}
    assert len(keys) == 1 and "" not in keys, "keys on the fleet: %s" % sorted(keys)


def test_pbx_bound(host):
    e = entry(host)
    assert e["binding"]["status"] == "ok", "%s: binding %s" % (e["name"], e["binding"]["status"])


def test_pbx_reaches_the_licensing_hosts(host):
    reach = entry(host)["reachability"]
    failing = ["%s at %s" % (h["host"], h["failed_stage"]) for h in reach["hosts"] if not h["ok"]]
    assert reach["reachable"] is True, "unreachable: %s" % (", ".join(failing) or reach["license_ping"])


def test_no_required_module_switched_off_for_lack_of_a_licence(host):
    modules = entry(host)["modules"]
    assert modules["checked"]
    assert modules["required_problems"] == []
    assert modules["disabled"].get("licence", []) == []


def test_nothing_expiring_soon(host):
    e = entry(host)
    assert e["expiring"] == [], "expiring within %s days: %s" % (report()["expiry_warning_days"], e["expiring"])
