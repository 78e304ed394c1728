"""Persistence of the emulator's state (design.md §2): a restart with the same --state-dir keeps ports,
passwords, API keys (inventory and created ones), licence keys, seats, modules, machine identities and the CA;
snapshot/restore brings a PBX's state back.

These are properties of the emulator rather than of MikoPBX, but the fidelity tests rely on them: a real PBX
keeps its settings, keys and certificate over a reboot, and a restored backup brings its settings back.
"""

from __future__ import annotations

import json

from fidelity_helpers import (
    FleetView,
    expect,
    fleet_fixture,
    module_row,
    start_fleet,
)

V3 = "/pbxcore/api/v3"

fleet = fleet_fixture(count=4, generation="mixed", time_scale=0.1)


def _api_key(pbx):
    admin = pbx.bearer(pbx.jwt())
    key = expect(admin.post(pbx.url + V3 + "/api-keys:generateKey", json={}, timeout=30), 200, "§3.1.4")["data"]["key"]
    resp = admin.post(
        pbx.url + V3 + "/api-keys", json={"description": "persist", "key": key, "full_permissions": True}, timeout=30
    )
    expect(resp, 201, "§3.1.4 create")
    return key


def test_restart_with_same_state_dir_keeps_everything(tmp_path):
    """design §2: restarting with the same --state-dir keeps ports, passwords, API keys, keys, seats, modules,
    machine ids and the CA; every credential still works over HTTPS after the restart."""
    state_dir = tmp_path / "state"
    first = start_fleet(state_dir, 4, "mixed", 0.1)
    try:
        fv = FleetView(first)
        ca_bytes = open(fv.ca, "rb").read()
        hosts_before = json.loads(json.dumps(fv.hostvars))
        machines_before = {p["name"]: p["machine_id"] for p in fv.control.fleet()}
        v3 = fv.pbx(fv.names("v3")[0])
        legacy = fv.pbx(fv.names("legacy")[0])
        key = fv.control.create_company(companyname="Persistent Ltd")
        for pbx in (v3, legacy):
            data = expect(pbx.lic_request({"licKey": key}), 200, "§11.3", {"licKey": key})
            assert data["result"] is True, data
        rows = [
            module_row("ModuleTemplate"),
            module_row("ModuleBackup", disabled=True, reason="DisabledByUser", text="by hand"),
        ]
        for pbx in (v3, legacy):
            fv.control.set_modules(pbx.name, rows)
        expect(v3.module_disable("ModuleTemplate", "", ""), 200, "§7.2 disable")
        created_key = _api_key(v3)
        seats_before = sorted(s["machine_id"] for s in fv.control.seats(key))
        modules_before = {n: fv.control.modules(n) for n in (v3.name, legacy.name)}
    finally:
        first.stop()

    second = start_fleet(state_dir, 4, "mixed", 0.1)
    try:
        fv = FleetView(second)
        assert open(fv.ca, "rb").read() == ca_bytes, "CA changed over a restart"
        assert fv.hostvars == hosts_before, "inventory (ports, passwords, API keys) changed over a restart"
        assert {p["name"]: p["machine_id"] for p in fv.control.fleet()} == machines_before
        v3 = fv.pbx(v3.name)
        legacy = fv.pbx(legacy.name)
        assert sorted(s["machine_id"] for s in fv.control.seats(key)) == seats_before
        for pbx in (v3, legacy):
            assert fv.control.license_key(pbx.name) == key
            assert fv.control.modules(pbx.name) == modules_before[pbx.name]
            info = expect(pbx.lic_info(), 200, "§5.2 after restart")
            assert info["result"] is True and json.loads(info["data"]["licenseInfo"])["@attributes"]["key"] == key
        expect(v3.bearer().get(v3.url + V3 + "/system:checkAuth", timeout=30), 200, "inventory API key")
        expect(v3.bearer(created_key).get(v3.url + V3 + "/system:checkAuth", timeout=30), 200, "created API key")
        expect(v3.v3_login(), 200, "v3 password")
        data = expect(legacy.legacy_login(), 200, "legacy password")
        assert data["success"] is True, data
        assert str(fv.control.modules(v3.name)["ModuleTemplate"]["disabled"]) == "1"
    finally:
        second.stop()


def test_snapshot_restore_same_machine(fleet):
    """design §2: restore (new_machine false) brings the PBX's settings and modules back and keeps its machine
    identity, so its seat still answers getLicenseInfo."""
    for gen in ("v3", "legacy"):
        pbx = fleet.pbx(fleet.names(gen)[0])
        key = fleet.control.create_company()
        data = expect(pbx.lic_request({"licKey": key}), 200, "§11.3", {"licKey": key})
        assert data["result"] is True, data
        fleet.control.set_modules(pbx.name, [module_row("ModuleTemplate"), module_row("ModuleBackup")])
        machine = fleet.control.machine_id(pbx.name)
        snap = fleet.control.snapshot(pbx.name)
        expect(pbx.module_disable("ModuleBackup", "DisabledByUser"), 200, "§7 disable")
        fleet.control.set_modules(pbx.name, [module_row("ModuleUsersUI", feature=201, product=101)])
        fleet.control.restore(pbx.name, snap, new_machine=False)
        assert fleet.control.machine_id(pbx.name) == machine
        assert fleet.control.license_key(pbx.name) == key
        mods = fleet.control.modules(pbx.name)
        assert set(mods) == {"ModuleTemplate", "ModuleBackup"}, mods
        assert str(mods["ModuleBackup"]["disabled"]) == "0", mods
        info = expect(pbx.lic_info(), 200, "§5.2 after restore on the same machine")
        assert info["result"] is True, info


def test_snapshot_restore_new_machine_changes_identity(fleet):
    """design §2: restore with new_machine gives the PBX a new machine identity; its credentials (the target's
    own listener, password) keep working while the settings come from the backup."""
    src = fleet.pbx(fleet.names("v3")[1])
    dst = fleet.pbx(fleet.names("legacy")[1])
    key = fleet.control.create_company()
    fleet.control.set_license_key(src.name, key, bind=True)
    before = fleet.control.machine_id(dst.name)
    snap = fleet.control.snapshot(dst.name)
    fleet.control.restore(dst.name, snap, new_machine=True)
    assert fleet.control.machine_id(dst.name) != before
    data = expect(dst.legacy_login(), 200, "legacy login after restore")
    assert data["success"] is True, data
    machines = [p["machine_id"] for p in fleet.control.fleet()]
    assert len(set(machines)) == len(machines), "machine identities must stay unique in the fleet"


def test_sigkill_loses_nothing_acknowledged(tmp_path):
    """design §2 (restart keeps state): a write the PBX acknowledged survives a SIGKILL of the emulator."""
    state_dir = tmp_path / "state"
    first = start_fleet(state_dir, 2, "mixed", 0.1)
    try:
        fv = FleetView(first)
        v3, legacy = fv.pbx(fv.names("v3")[0]), fv.pbx(fv.names("legacy")[0])
        key = fv.control.create_company()
        for pbx in (v3, legacy):
            assert expect(pbx.lic_request({"licKey": key}), 200, "§11.3")["result"] is True
        expect(legacy.module_disable("ModuleTemplate", "DisabledByUser"), 200, "§7.3")
        created_key = _api_key(v3)
    finally:
        first.kill()
    second = start_fleet(state_dir, 2, "mixed", 0.1)
    try:
        fv = FleetView(second)
        v3, legacy = fv.pbx(v3.name), fv.pbx(legacy.name)
        assert fv.control.license_key(v3.name) == key and fv.control.license_key(legacy.name) == key
        assert len(fv.control.seats(key)) == 2
        assert fv.control.modules(legacy.name)["ModuleTemplate"]["disableReason"] == "DisabledByUser"
        expect(v3.bearer(created_key).get(v3.url + V3 + "/system:checkAuth", timeout=30), 200, "created API key")
    finally:
        second.stop()


def test_inventory_contract_and_readiness(tmp_path):
    """design §2: the inventory appears only once every listener accepts (each PBX answers at once); vars carry
    ansible_connection local, the interpreter, the control URL and the CA; hosts carry URL, generation, admin
    user, a distinct random password and (v3 only) a 64-hex full-permission API key; mixed alternates v3, legacy."""
    import re

    fl = start_fleet(tmp_path / "state", 20, "mixed", 0.1)
    try:
        fv = FleetView(fl)
        gvars = fv.inventory["all"]["vars"]
        assert gvars["ansible_connection"] == "local" and gvars["ansible_python_interpreter"], gvars
        assert gvars["mikopbx_emulator_control_url"].startswith("http://127.0.0.1:"), gvars
        names = sorted(fv.hostvars)
        assert names == [f"pbx-{i:03d}" for i in range(1, 21)], names
        passwords = set()
        for i, name in enumerate(names):
            hv = fv.hostvars[name]
            assert hv["mikopbx_generation"] == ("v3" if i % 2 == 0 else "legacy"), (name, hv)
            assert re.fullmatch(r"https://127\.0\.0\.1:\d+", hv["mikopbx_url"]), hv
            assert hv["mikopbx_username"] == "admin", hv
            passwords.add(hv["mikopbx_password"])
            if hv["mikopbx_generation"] == "v3":
                assert re.fullmatch(r"[0-9a-f]{64}", hv["mikopbx_api_key"]), hv
            else:
                assert "mikopbx_api_key" not in hv, hv
            pbx = fv.pbx(name)
            resp = pbx.anon().get(pbx.url + "/pbxcore/api/system/ping", timeout=10)
            assert resp.status_code == 200 and resp.text.strip() == "PONG", (name, resp.status_code)
        assert len(passwords) == len(names), "passwords must be random per PBX"
    finally:
        fl.stop()


def test_password_rotation_applies_and_survives_restart(tmp_path):
    """§3.1.1 / §3.2 + design §2 (control extension: the admin rotates the web password on the box): the old
    password is refused (v3 401; legacy success:false), the new one works, an API key is unaffected, and the new
    password survives a restart with the same state directory."""
    state_dir = tmp_path / "state"
    first = start_fleet(state_dir, 2, "mixed", 0.1)
    try:
        fv = FleetView(first)
        v3, legacy = fv.pbx(fv.names("v3")[0]), fv.pbx(fv.names("legacy")[0])
        for pbx in (v3, legacy):
            fv.control._call("PUT", f"/control/pbx/{pbx.name}/password", {"password": f"new-{pbx.name}-pw"})
        expect(v3.v3_login(), 401, "§3.1.1 old password")
        expect(v3.v3_login(password=f"new-{v3.name}-pw"), 200, "§3.1.1 new password")
        expect(v3.bearer().get(v3.url + V3 + "/system:checkAuth", timeout=30), 200, "API key unaffected")
        assert expect(legacy.legacy_login(), 200, "§3.2 old password")["success"] is False
        assert expect(legacy.legacy_login(password=f"new-{legacy.name}-pw"), 200, "§3.2")["success"] is True
    finally:
        first.stop()
    second = start_fleet(state_dir, 2, "mixed", 0.1)
    try:
        fv = FleetView(second)
        v3, legacy = fv.pbx(v3.name), fv.pbx(legacy.name)
        expect(v3.v3_login(password=f"new-{v3.name}-pw"), 200, "new password after restart")
        assert expect(legacy.legacy_login(password=f"new-{legacy.name}-pw"), 200, "§3.2")["success"] is True
    finally:
        second.stop()
