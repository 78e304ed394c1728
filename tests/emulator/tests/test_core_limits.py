"""Smoke of the protective limits: nginx rate limiter, login limiter, fail2ban (both generations)."""

from __future__ import annotations

import pytest
import requests

from mikopbx_emulator.harness import Fleet

pytestmark = [pytest.mark.emulator]


@pytest.fixture(scope="module")
def limits_fleet(tmp_path_factory: pytest.TempPathFactory):
    with Fleet.start(count=4, generation="mixed", state_dir=tmp_path_factory.mktemp("limits")) as f:
        yield f


def _session(fleet: Fleet) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    s.verify = fleet.ca_path
    return s


def test_rate_limit_v3(limits_fleet: Fleet) -> None:
    hv = limits_fleet.hosts["pbx-001"]
    s = _session(limits_fleet)
    statuses = [s.get(hv["mikopbx_url"] + "/pbxcore/api/v3/system:ping").status_code for _n in range(205)]
    assert statuses[:200] == [200] * 200 and statuses[-1] == 429
    r = s.get(hv["mikopbx_url"] + "/pbxcore/api/v3/system:ping")
    assert r.status_code == 429 and r.text == "Too many requests" and r.headers["Content-Type"].startswith("text/plain")
    # localhost is exempt; the control API lifts the block
    assert s.get(hv["mikopbx_url"] + "/pbxcore/api/v3/system:ping", headers={"X-Emulator-Localhost": "1"}).ok
    limits_fleet.control.unban("pbx-001")
    assert s.get(hv["mikopbx_url"] + "/pbxcore/api/v3/system:ping").ok


def test_login_limit_and_fail2ban_v3(limits_fleet: Fleet) -> None:
    hv = limits_fleet.hosts["pbx-003"]
    url = hv["mikopbx_url"] + "/pbxcore/api/v3/auth:login"
    s = _session(limits_fleet)
    codes = [s.post(url, json={"login": "admin", "password": f"bad{i}"}).status_code for i in range(11)]
    assert codes == [401] * 10 + [429]
    r = s.post(url, json={"login": "admin", "password": hv["mikopbx_password"]})
    assert r.status_code == 429  # the limiter answers before the password is checked
    limits_fleet.control.advance_clock(301)
    for i in range(10):
        assert s.post(url, json={"login": "admin", "password": f"worse{i}"}).status_code == 401
    with pytest.raises(requests.ConnectionError):  # 20 failures in 600 s: the client is dropped
        _session(limits_fleet).get(hv["mikopbx_url"] + "/pbxcore/api/system/ping")
    limits_fleet.control.unban("pbx-003")
    assert _session(limits_fleet).get(hv["mikopbx_url"] + "/pbxcore/api/system/ping").text == "PONG"


def test_fail2ban_legacy(limits_fleet: Fleet) -> None:
    hv = limits_fleet.hosts["pbx-002"]
    s = _session(limits_fleet)
    for _n in range(4):
        assert s.get(hv["mikopbx_url"] + "/pbxcore/api/license/ping").status_code == 401
    assert s.get(hv["mikopbx_url"] + "/pbxcore/api/system/ping").text == "PONG"
    assert s.get(hv["mikopbx_url"] + "/pbxcore/api/license/ping").status_code == 401  # the 5th
    with pytest.raises(requests.ConnectionError):
        _session(limits_fleet).get(hv["mikopbx_url"] + "/pbxcore/api/system/ping")
    limits_fleet.control.unban("pbx-002")
    assert _session(limits_fleet).get(hv["mikopbx_url"] + "/pbxcore/api/system/ping").ok
