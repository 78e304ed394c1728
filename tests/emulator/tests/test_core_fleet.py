"""Smoke of the fleet mechanics: restart and kill keep state, control snapshot/restore, clock, faults."""

from __future__ import annotations

import pytest
import requests

from mikopbx_emulator.harness import ControlError, Fleet

pytestmark = [pytest.mark.emulator]


def _info(fleet: Fleet, name: str) -> requests.Response:
    hv = fleet.hosts[name]
    return requests.get(
        hv["mikopbx_url"] + "/pbxcore/api/v3/license:getLicenseInfo",
        timeout=30,
        headers={"Authorization": f"Bearer {hv['mikopbx_api_key']}"},
        verify=fleet.ca_path,
    )


def test_restart_and_kill_keep_state(tmp_path) -> None:
    fleet = Fleet.start(count=2, generation="v3", state_dir=tmp_path, time_scale=0.01, company_key_on="pbx-001")
    try:
        hosts = fleet.hosts
        key = fleet.control.state("pbx-001")["settings"]["PBXLicense"]
        assert _info(fleet, "pbx-001").status_code == 200
        assert _info(fleet, "pbx-002").status_code == 400  # no key
        fleet.control.set_modules("pbx-002", [{"uniqid": "ModuleUsersUI", "disabled": "0"}])
        fleet = fleet.restart()
        assert fleet.hosts == hosts  # same ports, passwords, API keys
        assert _info(fleet, "pbx-001").status_code == 200
        assert [m["uniqid"] for m in fleet.control.state("pbx-002")["modules"]] == ["ModuleUsersUI"]
        fleet.control.free_seat(key, fleet.control.state("pbx-001")["machine_id"])
        fleet = fleet.restart(kill=True)  # SIGKILL: acknowledged changes survive
        assert fleet.control.seats(key) == []
        assert fleet.hosts == hosts
    finally:
        fleet.stop()


def test_snapshot_restore_and_clock(tmp_path) -> None:
    with Fleet.start(count=2, generation="v3", state_dir=tmp_path, time_scale=0.01, company_key_on="pbx-001") as fleet:
        snap = fleet.control.snapshot("pbx-001")
        fleet.control.restore("pbx-002", snap, new_machine=True)
        st = fleet.control.state("pbx-002")
        assert st["settings"]["PBXLicense"] == fleet.control.state("pbx-001")["settings"]["PBXLicense"]
        r = _info(fleet, "pbx-002")  # a key string but no seat for this machine -> 2008
        assert r.status_code == 422 and "2008" in r.json()["messages"][0]
        before = fleet.control.clock()["now"]
        fleet.control.advance_clock(3600)
        assert fleet.control.clock()["now"] >= before + 3600
        with pytest.raises(ControlError):
            fleet.control.add_fault("no_such_fault")
        fleet.control.add_fault("worker_timeout", pbx="pbx-001", count=1)
        r = _info(fleet, "pbx-001")
        assert r.status_code == 400 and r.json()["messages"]["error"] == ["Request timeout or worker not responding"]
        assert _info(fleet, "pbx-001").status_code == 200
        kinds = {e["kind"] for e in fleet.control.requests("pbx-001")}
        assert kinds == {"read"}
