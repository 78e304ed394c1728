"""Backup restores (FC-10): never "ok" because a key string is present; remedied by the binding flow."""

from __future__ import annotations

import functools

import fleet_lib

EXPECTED_BEFORE = {"pbx-001": "ok", "pbx-002": "key_mismatch", "pbx-003": "binding_required", "pbx-004": "unbound"}


@functools.cache
def fleet_key() -> str:
    return (fleet_lib.ephemeral_dir() / fleet_lib.KEY_FILE).read_text().strip()


def test_first_run_saw_the_restores_as_not_bound(host):
    name = host.backend.get_hostname()
    entry = fleet_lib.report_host(fleet_lib.report("first-run.json"), name)
    assert entry["binding"]["before"] == EXPECTED_BEFORE[name]
    assert entry["binding"]["status"] == "ok"


def test_first_run_remedied_with_the_right_actions(host):
    name = host.backend.get_hostname()
    entry = fleet_lib.report_host(fleet_lib.report("first-run.json"), name)
    expected = {"pbx-001": "none", "pbx-002": "rebound_key", "pbx-003": "rebound_key", "pbx-004": "applied_key"}
    assert entry["registration"]["action"] == expected[name]


def test_pbx_holds_the_company_key_with_a_seat(host):
    name = host.backend.get_hostname()
    ctl = fleet_lib.control()
    assert fleet_lib.stored_key(ctl, name) == fleet_key(), "%s does not hold the company key" % name
    assert name in fleet_lib.seat_holders(ctl, fleet_key())


def test_foreign_key_released_its_seat(host):
    ctl = fleet_lib.control()
    others = [c for c in ctl.companies() if c.get("companyname") == "Someone Else Ltd"]
    assert len(others) == 1
    # The other company's key lost the seat of pbx-002 when it was replaced.
    assert "pbx-002" not in fleet_lib.seat_holders(ctl, others[0]["key"])


def test_idempotent_run_report(host):
    rep = fleet_lib.report()
    assert rep["totals"]["bound"] == 4 and rep["totals"]["changed"] == 0 and rep["violations"] == []
    assert fleet_lib.report_host(rep, host.backend.get_hostname())["state"] == "ok"


def test_no_clear_key_in_reports(host):
    for path in (fleet_lib.ephemeral_dir() / "report").iterdir():
        assert fleet_key() not in path.read_text()
