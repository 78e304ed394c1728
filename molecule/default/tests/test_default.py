"""Fresh mixed fleet: one registration, one key, every PBX bound, idempotent (state read from the emulator)."""

from __future__ import annotations

import fleet_lib


def test_pbx_holds_the_one_company_key_with_a_seat(host):
    name = host.backend.get_hostname()
    ctl = fleet_lib.control()
    keys = {h["name"]: fleet_lib.stored_key(ctl, h["name"]) for h in ctl.fleet()}

    assert keys[name], "%s stores no key" % name
    assert len(set(keys.values())) == 1, "the fleet holds %d different keys" % len(set(keys.values()))
    assert name in fleet_lib.seat_holders(ctl, keys[name])


def test_company_registered_exactly_once(host):
    ctl = fleet_lib.control()
    companies = [c for c in ctl.companies() if "Ромашка" in (c.get("companyname") or "")]
    assert len(companies) == 1
    assert companies[0]["companyname"] == 'ООО "Ромашка"'


def test_every_pbx_wrote_exactly_once(host):
    # Registration on one PBX and one key application on each other PBX; the idempotence run wrote nothing.
    summary = fleet_lib.control().requests_summary()
    assert summary[host.backend.get_hostname()]["write"] == 1


def test_report_of_the_idempotent_run(host):
    rep = fleet_lib.report()
    entry = fleet_lib.report_host(rep, host.backend.get_hostname())

    assert rep["totals"]["hosts"] == 4 and rep["totals"]["bound"] == 4
    assert rep["totals"]["changed"] == 0 and rep["violations"] == []
    assert rep["fleet"]["key_source"] == "discovered"
    assert entry["binding"]["status"] == "ok" and entry["state"] == "ok"
    assert entry["generation"] == host.ansible.get_variables()["mikopbx_generation"]
    assert entry["license_key_masked"] == rep["fleet"]["license_key_masked"]
    assert entry["license_key_masked"].startswith("MIKO-*****-*****-*****-")


def test_report_never_holds_a_clear_key(host):
    ctl = fleet_lib.control()
    key = fleet_lib.stored_key(ctl, host.backend.get_hostname())
    report_dir = fleet_lib.ephemeral_dir() / "report"
    for path in report_dir.iterdir():
        assert key not in path.read_text(), "%s contains the clear key" % path.name
