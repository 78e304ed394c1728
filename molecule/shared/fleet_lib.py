"""Helpers shared by the Molecule scenarios: emulator setup (prepare) and verifier checks.

As a script it prepares a scenario's emulated fleet through the emulator's control API::

    python fleet_lib.py prepare <scenario>

As a module the testinfra verifiers import it (see each scenario's tests/conftest.py) to read the
fleet report, query the emulator and run playbooks. Licence keys read from the control API stay in
memory: assertions compare them, never print them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
REPORT_NAME = "mikopbx-fleet-report.json"
CHECK_REPORT_NAME = "mikopbx-fleet-report-check.json"  # what a check-mode run writes
KEY_FILE = "fleet_key"


def scenario_dir() -> Path:
    return Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])


def ephemeral_dir() -> Path:
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def inventory_vars() -> dict[str, Any]:
    """``all.vars`` of the emulator's inventory ({} when the scenario runs against a real fleet)."""
    path = scenario_dir() / "inventory" / "emulator.yml"
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text())["all"].get("vars", {})


def control():
    """The emulator's control client, or None against a real fleet."""
    url = inventory_vars().get("mikopbx_emulator_control_url")
    if not url:
        return None
    from mikopbx_emulator.harness import ControlClient

    return ControlClient(url)


def report(name: str = REPORT_NAME) -> dict[str, Any]:
    return json.loads((ephemeral_dir() / "report" / name).read_text())


def report_host(rep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(h for h in rep["hosts"] if h["name"] == name)


def fingerprint(key: str) -> str:
    """A short stand-in for a key in assertion messages."""
    return hashlib.sha256(key.encode()).hexdigest()[:10] if key else "(none)"


def stored_key(ctl, name: str) -> str:
    return ctl.state(name)["settings"].get("PBXLicense") or ""


def seat_holders(ctl, key: str) -> list[str]:
    return sorted(seat["pbx"] for seat in ctl.seats(key))


def run_playbook(playbook: str, *args: str) -> subprocess.CompletedProcess:
    """Run a playbook of the collection against this scenario's inventory; output captured."""
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".collections")
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(scenario_dir() / "inventory"),
        str(ROOT / "playbooks" / playbook),
        "-e",
        "mikopbx_report_dir=%s" % (ephemeral_dir() / "report-verify"),
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host from ansible-playbook output."""
    found: dict[str, dict[str, int]] = {}
    for line in output.splitlines():
        match = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line)
        if match:
            found[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return found


def writes(summary_before: dict[str, Any], summary_after: dict[str, Any], name: str) -> int:
    before = summary_before.get(name, {}).get("write", 0)
    return summary_after.get(name, {}).get("write", 0) - before


# ---------------------------------------------------------------------------------------------
# prepare


def _save_key(key: str) -> None:
    path = ephemeral_dir() / KEY_FILE
    path.write_text(key)
    path.chmod(0o600)


def prepare_default(ctl) -> None:
    """A fresh fleet: nobody holds a key; the role registers the company once."""


def prepare_migration(ctl) -> None:
    """Key with 2 seats held by pbx-001 and pbx-003 (full). pbx-002 replaces pbx-001 (old machine still
    there); pbx-004 is pbx-003 restored onto new hardware, and pbx-003 is gone (its inventory URL is dead)."""
    key = ctl.create_company("Migration Example LLC", email="it@migration.example", contact="Ops", seats=2)
    ctl.set_license_key("pbx-001", key, bind=True)
    ctl.set_license_key("pbx-003", key, bind=True)
    ctl.restore("pbx-004", ctl.snapshot("pbx-003"), new_machine=True)


def prepare_restore_from_backup(ctl) -> None:
    """pbx-001 holds the company key; pbx-003 is a backup of pbx-001 restored onto new hardware (key
    stored, no seat); pbx-002 was restored from another company's backup (a different key, bound)."""
    key = ctl.create_company("Restore Example LLC", email="it@restore.example", contact="Ops", seats=10)
    ctl.set_license_key("pbx-001", key, bind=True)
    ctl.restore("pbx-003", ctl.snapshot("pbx-001"), new_machine=True)
    other = ctl.create_company("Someone Else Ltd", email="it@else.example", contact="Else", seats=10)
    ctl.set_license_key("pbx-002", other, bind=True)
    _save_key(key)


def prepare_license_hosts_blocked(ctl) -> None:
    """pbx-001 holds the key; pbx-002 cannot resolve lic.mikopbx.com, pbx-003's firewall drops the
    licensing hosts, pbx-004 sits behind a TLS-inspecting proxy."""
    key = ctl.create_company("Blocked Example LLC", email="it@blocked.example", contact="Ops", seats=10)
    ctl.set_license_key("pbx-001", key, bind=True)
    ctl.add_fault("dns_failure", pbx="pbx-002", hosts=["lic.mikopbx.com"])
    ctl.add_fault("egress_blocked", pbx="pbx-003")
    ctl.add_fault("tls_intercept", pbx="pbx-004")


def prepare_seat_limit(ctl) -> None:
    """A key with 3 seats, two held by pbx-001 and pbx-002: pbx-003 and pbx-004 need two, one is free."""
    key = ctl.create_company("Seats Example LLC", email="it@seats.example", contact="Ops", seats=3)
    ctl.set_license_key("pbx-001", key, bind=True)
    ctl.set_license_key("pbx-002", key, bind=True)


def prepare_fleet_audit(ctl) -> None:
    """The whole fleet holds one key (create started the emulator with --company-key-on all)."""


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "prepare":
        print("usage: fleet_lib.py prepare <scenario>", file=sys.stderr)
        return 2
    ctl = control()
    if ctl is None:
        print("no emulator in this scenario's inventory: nothing to prepare")
        return 0
    globals()["prepare_" + argv[2]](ctl)
    print("prepared %s" % argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
