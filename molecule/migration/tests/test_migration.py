"""Migration (FC-09): ordering, seats, the cabinet step when the old machine is gone, idempotency.

testinfra runs every test once per inventory host; the playbook runs of the verifier happen once
(cached) and each test asserts on what they observed.
"""

from __future__ import annotations

import functools

import fleet_lib

PAIRS = '{"mikopbx_migrations": {"pbx-004": "pbx-003"}}'


@functools.cache
def converged() -> dict:
    """State right after converge + idempotence (before the verifier changes anything)."""
    ctl = fleet_lib.control()
    key = fleet_lib.stored_key(ctl, "pbx-002")
    return {
        "key": key,
        "keys": {name: fleet_lib.stored_key(ctl, name) for name in ("pbx-001", "pbx-002", "pbx-003", "pbx-004")},
        "holders": fleet_lib.seat_holders(ctl, key) if key else [],
        "summary": ctl.requests_summary(),
    }


@functools.cache
def gone_and_full() -> dict:
    """Migrate pbx-004 from pbx-003, which is gone, while the key is full."""
    state = converged()
    ctl = fleet_lib.control()
    before = ctl.requests_summary()
    run = fleet_lib.run_playbook("migrate.yml", "-e", PAIRS)
    after = ctl.requests_summary()
    return {
        "run": run,
        "pbx004_writes": fleet_lib.writes(before, after, "pbx-004"),
        "pbx004_key": fleet_lib.stored_key(ctl, "pbx-004"),
        "holders": fleet_lib.seat_holders(ctl, state["key"]),
    }


@functools.cache
def after_cabinet_step() -> dict:
    """The operator frees the seat of pbx-003 in the licence cabinet; migrate again, then once more."""
    gone_and_full()
    ctl = fleet_lib.control()
    key = converged()["key"]
    gone = next(seat for seat in ctl.seats(key) if seat["pbx"] == "pbx-003")
    ctl.free_seat(key, gone["machine_id"])

    first = fleet_lib.run_playbook("migrate.yml", "-e", PAIRS)
    holders = fleet_lib.seat_holders(ctl, key)
    before = ctl.requests_summary()
    again = fleet_lib.run_playbook("migrate.yml", "-e", PAIRS)
    after = ctl.requests_summary()
    return {
        "first": first,
        "holders": holders,
        "again": again,
        "writes_again": {name: fleet_lib.writes(before, after, name) for name in after},
        "holders_again": fleet_lib.seat_holders(ctl, key),
    }


def test_binding_moved_from_the_old_to_the_new_machine(host):
    state = converged()
    assert state["key"], "pbx-002 holds no key after the migration"
    assert state["keys"]["pbx-001"] == "", "pbx-001 was not released"
    # The key was full (2 of 2): the old seat was released before the new one was taken.
    assert state["holders"] == ["pbx-002", "pbx-003"]


def test_each_machine_was_written_once(host):
    summary = converged()["summary"]
    assert summary["pbx-001"]["write"] == 1  # license:resetKey
    assert summary["pbx-002"]["write"] == 1  # processUserRequest with the key
    assert summary["pbx-004"]["write"] == 0


def test_old_machine_gone_and_key_full_stops_with_the_cabinet_step(host):
    result, key = gone_and_full(), converged()["key"]
    run = result["run"]

    assert run.returncode == 2, run.stdout[-3000:]
    assert "MANUAL STEP in the licence cabinet" in run.stdout
    assert "reset the seat (binding) of pbx-003" in run.stdout
    assert key not in run.stdout and key not in run.stderr
    assert result["pbx004_writes"] == 0, "a write reached pbx-004"
    assert result["pbx004_key"] == converged()["keys"]["pbx-004"], "pbx-004 lost its key"
    assert result["holders"] == ["pbx-002", "pbx-003"]


def test_after_the_cabinet_step_the_migration_completes(host):
    result = after_cabinet_step()
    assert result["first"].returncode == 0, result["first"].stdout[-3000:]
    assert fleet_lib.recap(result["first"].stdout)["pbx-004"]["changed"] >= 1
    assert result["holders"] == ["pbx-002", "pbx-004"]


def test_a_rerun_changes_nothing(host):
    result = after_cabinet_step()
    assert result["again"].returncode == 0, result["again"].stdout[-3000:]
    assert all(counts["changed"] == 0 for counts in fleet_lib.recap(result["again"].stdout).values())
    assert all(count == 0 for count in result["writes_again"].values()), result["writes_again"]
    assert result["holders_again"] == ["pbx-002", "pbx-004"]


def test_pbx_state_matches_its_role_in_the_migration(host):
    after_cabinet_step()
    name = host.backend.get_hostname()
    ctl = fleet_lib.control()
    key = converged()["key"]
    expected = {"pbx-001": "", "pbx-002": key, "pbx-003": key, "pbx-004": key}
    assert fleet_lib.stored_key(ctl, name) == expected[name]
