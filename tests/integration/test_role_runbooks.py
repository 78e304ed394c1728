"""The runbook playbooks in situations the Molecule scenarios do not cover.

- migrate.yml: a fresh machine replaces one that is gone, and the inventory names no key. The key
  to migrate is the one the rest of the fleet holds; before, the run stopped asking for
  mikopbx_license_key although the fleet had just been read.
- register_fleet.yml --diff: each binding shows its diff (masked key, status before and after), and
  no form of the key appears even at -vvv; the bind task used to hide its whole result.
- register_fleet.yml --check after a real run: the preview writes its own report files and the
  report of the real run stays; it used to be overwritten by a report of what would happen.
- register_fleet.yml after a migration: the old machine (named by mikopbx_migrate_from) is left
  alone; it used to be bound again, undoing the migration and taking a seat.
- preflight.yml on an inventory that lacks a PBX's URL or credentials: the report names the variable
  to set and does not count the PBX as an unreachable API; it used to show Ansible's raw message.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

MIGRATE = [{"ansible.builtin.import_playbook": "mikopbx.marketplace.migrate"}]


def dead_machine_inventory(tmp_path, host: str):
    """A second inventory source that points ``host`` at a closed port: the machine is gone."""
    path = tmp_path / "gone.yml"
    document = {"all": {"hosts": {host: {"mikopbx_url": "https://127.0.0.1:9"}}}}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_migrate_to_a_fresh_machine_takes_the_key_the_fleet_holds(start_fleet, run_playbook, tmp_path):
    fleet = start_fleet(count=3, generation="v3", time_scale=0.05)
    key = fleet.control.create_company(seats=10)
    fleet.control.seed_key("pbx-001", key)
    fleet.control.seed_key("pbx-002", key)
    # pbx-002 is gone; pbx-003 is a fresh machine (no key) that replaces it.
    gone = dead_machine_inventory(tmp_path, "pbx-002")
    extra = ["-i", str(gone), "-e", '{"mikopbx_migrations": {"pbx-003": "pbx-002"}}']

    preview = run_playbook(fleet, playbook=MIGRATE, extra_args=extra, check=True)
    assert preview.rc == 0, preview.output[-3000:]
    assert "Check mode, nothing was changed; the run would do this: pbx-003 replaces pbx-002 (gone)" in preview.output
    assert fleet.control.stored_key("pbx-003") == "" and fleet.control.request_kinds("pbx-003")["write"] == 0

    run = run_playbook(fleet, playbook=MIGRATE, extra_args=extra, diff=True, verbosity=3)

    assert run.rc == 0, run.output[-3000:]
    assert "no licence key to migrate" not in run.output
    assert "pbx-003 replaces pbx-002 (gone)" in run.output
    assert fleet.control.stored_key("pbx-003") == key
    assert sorted(seat["pbx"] for seat in fleet.control.seats(key)) == ["pbx-001", "pbx-002", "pbx-003"]
    assert '+    "binding_status": "ok"' in run.stdout  # the bind shows its --diff
    for form in key_forms(key):
        assert form not in run.output, "a form of the key is in the output"

    again = run_playbook(fleet, playbook=MIGRATE, extra_args=extra)
    assert again.rc == 0, again.output[-3000:]
    assert "changed=0" in again.output and "changed=1" not in again.output
    assert fleet.control.request_kinds("pbx-003")["write"] == 1  # the first run's bind only


def test_migrate_with_no_key_anywhere_stops_and_says_what_to_set(start_fleet, run_playbook, tmp_path):
    fleet = start_fleet(count=2, generation="v3", time_scale=0.05)
    gone = dead_machine_inventory(tmp_path, "pbx-001")
    extra = ["-i", str(gone), "-e", '{"mikopbx_migrations": {"pbx-002": "pbx-001"}}']

    run = run_playbook(fleet, playbook=MIGRATE, extra_args=extra)

    assert run.rc != 0
    assert "no licence key to migrate" in run.output, run.output[-3000:]
    assert "Set mikopbx_license_key to the company key. Nothing was changed." in run.output
    assert fleet.control.request_kinds("pbx-002")["write"] == 0


def key_forms(key: str) -> list[str]:
    """The key and the forms a careless log could show (the mask keeps the last group only)."""
    return [key, key.lower(), key.replace("-", ""), key[:-5]]


def test_register_fleet_diff_shows_each_binding_without_the_key(start_fleet, run_playbook, tmp_path):
    """--diff shows what binding changed on each PBX; the bind task used to hide its whole result."""
    fleet = start_fleet(count=3, generation="mixed", time_scale=0.05)
    key = fleet.control.create_company()
    fleet.control.seed_key("pbx-001", key)
    fleet.control.seed_key("pbx-002", key, bind=False)  # restored from a backup: key stored, no seat

    run = run_playbook(
        fleet,
        playbook=[{"ansible.builtin.import_playbook": "mikopbx.marketplace.register_fleet"}],
        diff=True,
        verbosity=3,
        extra_args=["-e", "mikopbx_report_dir=%s" % tmp_path],
    )

    assert run.rc == 0, run.output[-3000:]
    # One diff per PBX bound in this run (pbx-002 and pbx-003), none for pbx-001, which already was.
    assert run.stdout.count('+    "binding_status": "ok"') == 2, run.stdout[-3000:]
    assert '-    "binding_status": "binding_required"' in run.stdout
    assert '-    "binding_status": "unbound",' in run.stdout
    assert '+    "license_key": "MIKO-*****-*****-*****-%s"' % key[-5:] in run.stdout
    for form in key_forms(key):
        assert form not in run.output, "a form of the key is in the output"


def test_a_check_run_keeps_the_report_of_the_last_real_run(start_fleet, run_playbook, tmp_path):
    fleet = start_fleet(count=2, generation="v3", time_scale=0.05)
    key = fleet.control.create_company()
    fleet.control.seed_key("pbx-001", key)
    playbook = [{"ansible.builtin.import_playbook": "mikopbx.marketplace.register_fleet"}]
    report_dir = tmp_path / "report"
    extra = ["-e", "mikopbx_report_dir=%s" % report_dir, "-e", "mikopbx_report_print=false"]

    real = run_playbook(fleet, playbook=playbook, extra_args=extra)
    assert real.rc == 0, real.output[-3000:]
    real_json = (report_dir / "mikopbx-fleet-report.json").read_text()
    real_md = (report_dir / "mikopbx-fleet-report.md").read_text()

    fleet.control.seed_key("pbx-002", key, bind=False)  # something for the preview to find
    writes_before = fleet.control.request_kinds("pbx-002")["write"]
    preview = run_playbook(fleet, playbook=playbook, extra_args=extra, check=True)

    assert preview.rc == 0, preview.output[-3000:]
    assert (report_dir / "mikopbx-fleet-report.json").read_text() == real_json
    assert (report_dir / "mikopbx-fleet-report.md").read_text() == real_md
    checked = json.loads((report_dir / "mikopbx-fleet-report-check.json").read_text())
    assert checked["fleet"]["check_mode"] is True
    assert json.loads(real_json)["fleet"]["check_mode"] is False
    assert (report_dir / "mikopbx-fleet-report-check.md").is_file()
    assert fleet.control.request_kinds("pbx-002")["write"] == writes_before

    named = run_playbook(fleet, playbook=playbook, extra_args=extra + ["-e", "mikopbx_report_name=audit"], check=True)
    assert named.rc == 0, named.output[-3000:]
    assert json.loads((report_dir / "audit-check.json").read_text())["fleet"]["check_mode"] is True
    assert not (report_dir / "audit.json").exists()  # a custom name is a preview's too: -check is added


def test_a_pbx_missing_its_url_or_credentials_is_reported_with_the_variable_to_set(start_fleet, run_playbook, tmp_path):
    fleet = start_fleet(count=5, generation="mixed", time_scale=0.05)
    document = yaml.safe_load(fleet.inventory_path.read_text())
    hosts = document["all"]["hosts"]
    for name in ("mikopbx_password", "mikopbx_api_key"):
        hosts["pbx-002"].pop(name, None)  # 2024.1: a username, no password
    del hosts["pbx-003"]["mikopbx_url"]
    hosts["pbx-004"]["mikopbx_generation"] = "V3 "
    for name in ("mikopbx_username", "mikopbx_password", "mikopbx_api_key"):
        hosts["pbx-005"].pop(name, None)  # 2026.1: nothing to log in with
    inventory = tmp_path / "incomplete.yml"
    inventory.write_text(yaml.safe_dump(document), encoding="utf-8")
    incomplete = dataclasses.replace(fleet, inventory_path=inventory)

    run = run_playbook(
        incomplete,
        playbook=[{"ansible.builtin.import_playbook": "mikopbx.marketplace.preflight"}],
        extra_args=["-e", "mikopbx_report_dir=%s" % tmp_path],
    )

    assert run.rc != 0  # the errors threshold still fails the run
    report = json.loads((tmp_path / "mikopbx-fleet-report.json").read_text())
    hosts = {h["name"]: h for h in report["hosts"]}
    assert hosts["pbx-001"]["api_ok"] and not hosts["pbx-001"]["errors"], hosts["pbx-001"]
    # pbx-002 is a 2024.1 PBX of the mixed fleet: an API key would not help it.
    assert hosts["pbx-002"]["generation"] == "legacy"
    assert hosts["pbx-002"]["settings_problem"].startswith("mikopbx_password is not set; 2024.1 logs in with")
    assert hosts["pbx-003"]["settings_problem"].startswith("mikopbx_url is not set")
    assert hosts["pbx-004"]["settings_problem"] == "mikopbx_generation must be auto, v3 or legacy, got 'V3 '"
    assert hosts["pbx-005"]["generation"] == "v3"
    assert hosts["pbx-005"]["settings_problem"].startswith("no credentials; set mikopbx_api_key (2026.1) or")
    assert report["totals"]["api_unreachable"] == 0 and report["totals"]["settings_problems"] == 4
    assert "errors 4 > 0 (pbx-002, pbx-003, pbx-004, pbx-005)" in run.output
    assert "pbx-002: inventory settings: mikopbx_password is not set" in run.output
    markdown = (tmp_path / "mikopbx-fleet-report.md").read_text()
    assert "Finalization of task args" not in markdown and "required together" not in markdown
    for host in ("pbx-002", "pbx-003", "pbx-004", "pbx-005"):
        assert fleet.control.requests(host) == [], host


def test_register_fleet_after_a_migration_leaves_the_old_machine_alone(start_fleet, run_playbook, tmp_path):
    fleet = start_fleet(count=3, generation="v3", time_scale=0.05)
    key = fleet.control.create_company(seats=10)
    fleet.control.seed_key("pbx-001", key)
    fleet.control.seed_key("pbx-002", key)
    # pbx-003 replaces pbx-002, which still runs; the pair stays in the inventory, as documented.
    pair = tmp_path / "pair.yml"
    pair.write_text(yaml.safe_dump({"all": {"hosts": {"pbx-003": {"mikopbx_migrate_from": "pbx-002"}}}}))
    extra = ["-i", str(pair), "-e", "mikopbx_report_dir=%s" % tmp_path, "-e", "mikopbx_report_print=false"]

    migrated = run_playbook(fleet, playbook=MIGRATE, extra_args=extra)
    assert migrated.rc == 0, migrated.output[-3000:]
    assert fleet.control.stored_key("pbx-002") == "" and fleet.control.stored_key("pbx-003") == key
    writes = fleet.control.request_kinds("pbx-002")["write"]

    run = run_playbook(
        fleet, playbook=[{"ansible.builtin.import_playbook": "mikopbx.marketplace.register_fleet"}], extra_args=extra
    )

    assert run.rc == 0, run.output[-3000:]  # the old machine is not "unbound" for the thresholds
    assert fleet.control.stored_key("pbx-002") == "", "the old machine was bound again"
    assert fleet.control.request_kinds("pbx-002")["write"] == writes
    assert sorted(seat["pbx"] for seat in fleet.control.seats(key)) == ["pbx-001", "pbx-003"]
    assert "pbx-002: replaced by pbx-003 (mikopbx_migrate_from); remove this old machine" in run.output
    report = json.loads((tmp_path / "mikopbx-fleet-report.json").read_text())
    old = next(h for h in report["hosts"] if h["name"] == "pbx-002")
    assert old["replaced_by"] == ["pbx-003"] and report["totals"]["unbound"] == 0
