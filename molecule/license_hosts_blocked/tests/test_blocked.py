"""Licensing hosts blocked from some PBXs: named per host and stage, left alone, summary decides."""

from __future__ import annotations

import functools

import fleet_lib

# PBX -> (licensing host that fails, stage, intercepted)
BLOCKED = {
    "pbx-002": ("lic.mikopbx.com", "dns", False),
    "pbx-003": ("lic.miko.ru", "tcp", False),
    "pbx-004": ("lic.miko.ru", "tls", True),
}


@functools.cache
def initial() -> dict:
    """State after converge + idempotence, taken before the verifier runs the playbook again."""
    ctl = fleet_lib.control()
    return {
        "summary": ctl.requests_summary(),
        "keys": {item["name"]: fleet_lib.stored_key(ctl, item["name"]) for item in ctl.fleet()},
    }


@functools.cache
def default_thresholds_run():
    initial()
    return fleet_lib.run_playbook("register_fleet.yml", "-e", "mikopbx_report_print=false")


def test_reachability_is_reported_per_host_and_stage(host):
    name = host.backend.get_hostname()
    entry = fleet_lib.report_host(fleet_lib.report(), name)
    reach = entry["reachability"]
    assert reach["method"] == "pbx_probe"
    if name not in BLOCKED:
        assert reach["reachable"] is True and entry["binding"]["status"] == "ok"
        return
    failing, stage, intercepted = BLOCKED[name]
    assert reach["reachable"] is False
    by_host = {item["host"]: item for item in reach["hosts"]}
    assert by_host[failing]["ok"] is False
    assert by_host[failing]["failed_stage"] == stage
    assert by_host[failing]["intercepted"] is intercepted
    assert entry["skipped"].startswith("licensing hosts unreachable from the PBX")


def test_only_pbx_001_holds_a_key_and_blocked_pbxs_received_no_write(host):
    name = host.backend.get_hostname()
    writes = initial()["summary"][name]["write"]
    assert writes == (0 if name in BLOCKED or name == "pbx-001" else 1)


def test_blocked_pbxs_hold_no_key_and_no_seat(host):
    name = host.backend.get_hostname()
    keys = initial()["keys"]
    if name in BLOCKED:
        assert keys[name] == ""
    else:
        assert name in fleet_lib.seat_holders(fleet_lib.control(), keys[name])


def test_default_thresholds_fail_the_run_after_reporting_every_pbx(host):
    run = default_thresholds_run()
    assert run.returncode == 2, run.stdout[-3000:]
    assert "Fleet thresholds exceeded: unreachable 3 > 0 (pbx-002, pbx-003, pbx-004)" in run.stdout
    # Only the final summary failed: every PBX went through every phase.
    counts = fleet_lib.recap(run.stdout)
    assert sum(c["failed"] for c in counts.values()) == 1
    report = fleet_lib.ephemeral_dir() / "report-verify" / "mikopbx-fleet-report.json"
    assert report.exists()
