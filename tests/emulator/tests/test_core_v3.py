"""Quick smoke of the v3 (2026.1) generation through the harness."""

from __future__ import annotations

import json
import shlex

import pytest

from mikopbx_emulator.harness import Fleet

pytestmark = [pytest.mark.emulator, pytest.mark.v3]
PBX = "pbx-001"  # mixed fleet: odd numbers are v3


def test_inventory_and_fleet(fleet: Fleet) -> None:
    assert set(fleet.hosts) == {"pbx-001", "pbx-002", "pbx-003", "pbx-004"}
    hv = fleet.hosts[PBX]
    assert hv["mikopbx_generation"] == "v3" and len(hv["mikopbx_api_key"]) == 64
    assert fleet.hosts["pbx-002"]["mikopbx_generation"] == "legacy"
    assert "mikopbx_api_key" not in fleet.hosts["pbx-002"]
    names = [p["name"] for p in fleet.control.fleet()]
    assert names == sorted(fleet.hosts)


def test_auth(fleet: Fleet, client) -> None:
    c = client(PBX)
    assert c.get("/pbxcore/api/system/ping").text == "PONG"
    assert c.get("/pbxcore/api/v3/system:ping").json()["result"] is True
    r = c.get("/pbxcore/api/v3/system:checkAuth")
    assert r.status_code == 401 and r.json()["messages"]["error"] == ["The user isn't authenticated."]
    assert c.get("/pbxcore/api/v3/system:checkAuth", headers={"X-Emulator-Localhost": "1"}).status_code == 200
    assert c.get("/pbxcore/api/v3/system:checkAuth", headers=c.bearer()).status_code == 200
    r = c.post("/pbxcore/api/v3/auth:login", json={"login": "admin", "password": c.hv["mikopbx_password"]})
    assert r.status_code == 200, r.text
    token = r.json()["data"]["accessToken"]
    assert "refreshToken" in c.s.cookies
    assert c.get("/pbxcore/api/v3/system:checkAuth", headers={"Authorization": f"Bearer {token}"}).ok
    r = c.post("/pbxcore/api/v3/auth:refresh")
    assert r.status_code == 200 and r.json()["data"]["expiresIn"] == 900
    r = c.post("/pbxcore/api/v3/auth:login", data={"login": "admin", "password": "wrong"})
    assert r.status_code == 401


def test_licence_flow(fleet: Fleet, client) -> None:
    c = client(PBX)
    h = c.bearer()
    r = c.get("/pbxcore/api/v3/license:getLicenseInfo", headers=h)
    assert r.status_code == 400 and r.json()["httpCode"] == 400
    key = fleet.control.create_company('ООО "Ромашка"', email="a@example.com", contact="Иван", seats=1)
    r = c.post("/pbxcore/api/v3/license:processUserRequest", headers=h, json={"licKey": key})
    assert r.status_code == 200 and r.json()["data"]["PBXLicense"] == key, r.text
    info = json.loads(c.get("/pbxcore/api/v3/license:getLicenseInfo", headers=h).json()["data"]["licenseInfo"])
    assert info["@attributes"]["companyname"] == 'ООО "Ромашка"'
    assert info["product"]["feature"]["@attributes"]["captured"] == "1"
    # same key again: idempotent, no server call
    r = c.post("/pbxcore/api/v3/license:processUserRequest", headers=h, json={"licKey": key})
    assert r.status_code == 200 and r.json()["result"] is True
    # seats full for another machine -> 2008 (HTTP 400 on v3), nothing stored
    c3 = client("pbx-003")
    r = c3.post("/pbxcore/api/v3/license:processUserRequest", headers=c3.bearer(), json={"licKey": key})
    assert r.status_code == 400 and r.json()["messages"]["license"], r.text
    assert fleet.control.state("pbx-003")["settings"]["PBXLicense"] == ""
    # unknown well-formed key -> 2026 / HTTP 400
    r = c3.post(
        "/pbxcore/api/v3/license:processUserRequest",
        headers=c3.bearer(),
        json={"licKey": "MIKO-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZ0"},
    )
    assert r.status_code == 400
    # service silent -> 503
    fleet.control.add_fault("licensing_down", pbx="pbx-003")
    r = c3.post(
        "/pbxcore/api/v3/license:processUserRequest",
        headers=c3.bearer(),
        json={"licKey": "MIKO-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZ0"},
    )
    assert r.status_code == 503
    fleet.control.clear_faults("pbx-003")
    # resetKey is a GET and a write; it frees the seat
    fleet.control.clear_requests(PBX)
    r = c.get("/pbxcore/api/v3/license:resetKey", headers=h)
    assert r.status_code == 200
    assert fleet.control.seats(key) == []
    log = fleet.control.requests(PBX)
    assert log[-1]["kind"] == "write" and log[-1]["path"] == "/pbxcore/api/v3/license:resetKey"
    # trial registration (no key)
    r = c.post(
        "/pbxcore/api/v3/license:processUserRequest",
        headers=h,
        data={"companyname": "Trial Co", "email": "t@example.com", "contact": "T"},
    )
    assert r.status_code == 200 and isinstance(r.json()["messages"]["info"], str), r.text


def test_sql_and_probe(fleet: Fleet, client) -> None:
    c = client(PBX)
    h = c.bearer()
    r = c.post(
        "/pbxcore/api/v3/system:executeSqlRequest",
        headers=h,
        json={"query": "SELECT key, value FROM m_PbxSettings WHERE key='PBXVersion'"},
    )
    assert r.json()["data"]["rows"] == [{"key": "PBXVersion", "value": "2026.1.223"}]
    r = c.post("/pbxcore/api/v3/system:executeSqlRequest", headers=h, json={"query": "DROP TABLE m_PbxSettings"})
    assert r.status_code == 422
    cmd = "sh -c 'true' mikopbx-probe-v1 443 5 lic.mikopbx.com lic.miko.ru example.invalid"
    fleet.control.add_fault("dns_failure", pbx=PBX, hosts=["lic.miko.ru"])
    r = c.post("/pbxcore/api/v3/system:executeBashCommand", headers=h, json={"command": cmd})
    lines = [ln.split("\t") for ln in r.json()["data"]["output"].splitlines()]
    assert [ln[2] for ln in lines] == ["0", "6", "6"]
    fleet.control.clear_faults(PBX)
    r = c.post("/pbxcore/api/v3/system:executeBashCommand", headers=h, json={"command": shlex.join(["ls", "/"])})
    assert r.status_code == 422
