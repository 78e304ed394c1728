"""Quick smoke of the legacy (2024.1) generation through the harness."""

from __future__ import annotations

import pytest

from mikopbx_emulator.harness import Fleet

pytestmark = [pytest.mark.emulator, pytest.mark.legacy]
PBX = "pbx-002"  # mixed fleet: even numbers are legacy


def test_session_and_licence(fleet: Fleet, client) -> None:
    c = client(PBX)
    r = c.get("/pbxcore/api/license/getLicenseInfo")
    assert r.status_code == 401 and r.json()["errors"] == ["The user isn't authenticated."]
    c.legacy_login()
    assert "PHPSESSID" in c.s.cookies
    r = c.get("/pbxcore/api/license/getLicenseInfo")
    assert r.status_code == 200 and r.json()["result"] is False and "jsonapi" in r.json()
    key = fleet.control.create_company("Legacy Co", email="l@example.com", contact="L")
    # JSON body is ignored by the legacy controller -> silently a (failing) trial registration
    r = c.post("/pbxcore/api/license/processUserRequest", json={"licKey": key})
    assert r.status_code == 200 and r.json()["result"] is False
    r = c.post("/pbxcore/api/license/processUserRequest", data={"licKey": key})
    assert r.json()["result"] is True and r.json()["data"]["PBXLicense"] == key
    r = c.post("/pbxcore/api/license/processUserRequest", data={"licKey": key})
    assert r.status_code == 200 and r.json()["result"] is False and r.json()["messages"] == []
    assert c.get("/pbxcore/api/license/getLicenseInfo").json()["result"] is True
    assert c.get("/pbxcore/api/v3/system:ping").status_code == 404


def test_admin_page(fleet: Fleet, client) -> None:
    c = client(PBX)
    r = c.get("/admin-cabinet/pbx-extension-modules/index", headers={"X-Requested-With": "XMLHttpRequest"})
    assert r.status_code == 403 and r.text == "This user is not authorized"
    r = c.get("/admin-cabinet/pbx-extension-modules/index", allow_redirects=False)
    assert r.status_code == 302
    fleet.control.set_modules(
        PBX,
        [
            {
                "uniqid": "ModuleUsersUI",
                "version": "1.3.2",
                "disabled": "1",
                "disableReason": "DisabledByLicense",
                "disableReasonText": "2011: Feature license expired",
            },
            {"uniqid": "ModuleTemplate", "disabled": "0"},
        ],
    )
    c.legacy_login()
    page = c.get("/admin-cabinet/pbx-extension-modules/index").text
    assert '<tr class="module-row" data-id="ModuleUsersUI" data-version="1.3.2">' in page
    assert '<i class="big red dont icon"></i><i class="key icon"></i>' in page
    assert 'data-html="2011: Feature license expired"' in page
    assert "var globalPBXVersion = '2024.1.114';" in page
    r = c.post("/pbxcore/api/modules/core/enableModule", data={"uniqid": "ModuleUsersUI"})
    assert r.json()["result"] is False and r.json()["messages"]["license"]
    r = c.post("/pbxcore/api/modules/core/disableModule", data={"uniqid": "ModuleTemplate"})
    assert r.json()["result"] is True
    mods = {m["uniqid"]: m for m in fleet.control.state(PBX)["modules"]}
    assert mods["ModuleTemplate"]["disableReason"] == "DisabledByUser"
