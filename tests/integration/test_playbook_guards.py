"""Guards of the runbook playbooks that stop a run before it reads or changes anything.

- register_fleet.yml with a mistyped mikopbx_license_key: without the guard the typo was taken as the
  company key and the PBXs holding the real key were reported as holding a foreign one.
- migrate.yml with no pair, or a pair naming a host the inventory lacks: without the guard the run
  ended "ok" having done nothing.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

# A key with its last group cut off: the shape of a copy-and-paste accident.
CUT_KEY = "MIKO-12345-ABCDE-XYZ12"


def test_register_fleet_refuses_a_malformed_key_before_any_request(start_fleet, run_playbook):
    fleet = start_fleet(count=2, generation="mixed", time_scale=0.05)
    run = run_playbook(
        fleet,
        playbook=[{"ansible.builtin.import_playbook": "mikopbx.marketplace.register_fleet"}],
        extra_args=["-e", "mikopbx_license_key=" + CUT_KEY],
        verbosity=3,
    )
    assert run.rc != 0
    assert "mikopbx_license_key is not a MikoPBX licence key" in run.output, run.output[-2000:]
    assert "Nothing was read or changed" in run.output
    assert CUT_KEY not in run.output  # not even at -vvv
    for host in fleet.names():
        assert fleet.control.requests(host) == [], host


def test_register_fleet_accepts_a_key_written_with_spaces_and_lower_case(start_fleet, run_playbook, tmp_path):
    fleet = start_fleet(count=1, generation="v3", time_scale=0.05)
    key = fleet.control.create_company()
    sloppy = " " + key.lower().replace("-", " - ", 1) + " "
    run = run_playbook(
        fleet,
        playbook=[{"ansible.builtin.import_playbook": "mikopbx.marketplace.register_fleet"}],
        extra_args=["-e", '{"mikopbx_license_key": "%s"}' % sloppy, "-e", "mikopbx_report_dir=%s" % tmp_path],
    )
    assert "is not a MikoPBX licence key" not in run.output
    assert run.rc == 0, run.output[-2000:]
    assert fleet.control.stored_key(fleet.names()[0]) == key


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("null", True), ("12345", False)],
    ids=["null-means-empty", "number"],
)
def test_register_fleet_takes_a_null_key_as_empty_and_refuses_a_number(
    start_fleet, run_playbook, tmp_path, value, accepted
):
    """``mikopbx_license_key:`` with nothing after it is YAML null; it used to fail in a filter."""
    fleet = start_fleet(count=1, generation="v3", time_scale=0.05)
    key = fleet.control.create_company()
    fleet.control.seed_key(fleet.names()[0], key)
    run = run_playbook(
        fleet,
        playbook=[{"ansible.builtin.import_playbook": "mikopbx.marketplace.register_fleet"}],
        extra_args=["-e", '{"mikopbx_license_key": %s}' % value, "-e", "mikopbx_report_dir=%s" % tmp_path],
    )
    assert "has no len" not in run.output and "filter plugin" not in run.output, run.output[-2000:]
    if accepted:
        assert run.rc == 0, run.output[-2000:]
        assert "(discovered)" in (tmp_path / "mikopbx-fleet-report.md").read_text()
    else:
        assert run.rc != 0
        assert "mikopbx_license_key is not a MikoPBX licence key" in run.output, run.output[-2000:]
        assert fleet.control.requests(fleet.names()[0]) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], "No PBX to migrate: set mikopbx_migrate_from"),
        (["-e", '{"mikopbx_migrations": {"pbx-9": "pbx-001"}}'], "not in the inventory: pbx-9;"),
    ],
    ids=["no-pair", "unknown-host"],
)
def test_migrate_stops_when_there_is_nothing_to_migrate(start_fleet, run_playbook, extra, expected):
    fleet = start_fleet(count=2, generation="v3", time_scale=0.05)
    run = run_playbook(
        fleet, playbook=[{"ansible.builtin.import_playbook": "mikopbx.marketplace.migrate"}], extra_args=extra
    )
    assert run.rc != 0
    assert expected in run.output, run.output[-2000:]
    assert "Nothing was changed" in run.output
    for host in fleet.names():
        assert fleet.control.request_kinds(host)["write"] == 0, host


def test_a_legacy_pbx_with_an_api_key_from_group_vars_logs_in_with_its_password(start_fleet, run_playbook, tmp_path):
    """2024.1 has no API keys; a key set for the whole fleet (group_vars) must not hide the password."""
    fleet = start_fleet(count=1, generation="legacy", time_scale=0.05)
    host = fleet.names()[0]
    key = fleet.control.create_company()
    fleet.control.seed_key(host, key)
    run = run_playbook(
        fleet,
        playbook=[{"ansible.builtin.import_playbook": "mikopbx.marketplace.preflight"}],
        extra_args=["-e", "mikopbx_api_key=fleet-wide-api-key", "-e", "mikopbx_report_dir=%s" % tmp_path],
    )
    assert run.rc == 0, run.output[-2000:]
    assert "has no API keys" not in run.output
    assert fleet.control.request_kinds(host)["auth"] >= 1
