"""Seat budget (FC-08): stop before any change and name the PBXs; 2008 per PBX lands in the report."""

from __future__ import annotations

import functools
import json

import fleet_lib


@functools.cache
def message() -> str:
    return (fleet_lib.ephemeral_dir() / "seat-budget-message.txt").read_text()


@functools.cache
def initial() -> dict:
    """State after converge + idempotence, taken before the verifier changes anything."""
    ctl = fleet_lib.control()
    return {
        "summary": ctl.requests_summary(),
        "keys": {item["name"]: fleet_lib.stored_key(ctl, item["name"]) for item in ctl.fleet()},
    }


@functools.cache
def without_budget_check():
    initial()
    ctl = fleet_lib.control()
    before = ctl.requests_summary()
    run = fleet_lib.run_playbook(
        "register_fleet.yml", "-e", "mikopbx_seat_check=false", "-e", "mikopbx_report_print=false"
    )
    return run, before, ctl.requests_summary()


def test_budget_message_names_the_pbxs_and_the_figures(host):
    text = message()
    assert "3 seats, 2 captured (1 free" in text
    assert "2 PBXs need a seat: pbx-003, pbx-004" in text
    assert "holding a seat: pbx-001, pbx-002" in text


def test_nothing_was_written(host):
    # converge and the idempotence run both stopped before any change
    assert initial()["summary"][host.backend.get_hostname()]["write"] == 0


def test_pbx_keys_unchanged(host):
    name = host.backend.get_hostname()
    assert bool(initial()["keys"][name]) == (name in ("pbx-001", "pbx-002"))


def test_without_the_budget_check_the_refused_pbx_is_reported(host):
    run, before, after = without_budget_check()
    assert run.returncode == 2, run.stdout[-3000:]
    report = json.loads((fleet_lib.ephemeral_dir() / "report-verify" / "mikopbx-fleet-report.json").read_text())
    entries = {h["name"]: h for h in report["hosts"]}
    refused = [n for n, h in entries.items() if h["binding"]["status"] != "ok"]
    assert len(refused) == 1, refused
    step = entries[refused[0]]["binding"]["manual_step"]
    assert step and "licence cabinet" in step
    assert {v["threshold"]: v["hosts"] for v in report["violations"]}["unbound"] == refused
    # The licensing service refused the seat (2008): the attempt changed nothing on that PBX.
    ctl = fleet_lib.control()
    assert fleet_lib.stored_key(ctl, refused[0]) == ""
    assert refused[0] not in fleet_lib.seat_holders(ctl, fleet_lib.stored_key(ctl, "pbx-001"))
    assert fleet_lib.writes(before, after, refused[0]) <= 1
