"""The role's optional SSH probe for MikoPBX 2024.1 (mikopbx_legacy_ssh_probe), end to end.

2024.1 has no command API, so the role can send the fixed probe over SSH with ``raw``. The emulator
has no SSH server; the test runs the same play with ``ansible_connection=local`` as an extra variable
(which outranks the task's own ``ansible_connection: ssh``), so the probe script really runs in a
shell here, and puts a stand-in ``curl`` first on PATH that answers per licensing host and logs what
it was asked. Everything else (the role, the probe command filter, the output parser, the report) is
the real thing.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.legacy, pytest.mark.slow]

VENV_BIN = str(Path(sys.executable).parent)
# The stand-in curl: lic.miko.ru refuses the TCP connection, every other host answers HTTP 200.
FAKE_CURL = """#!/bin/sh
for arg in "$@"; do url=$arg; done
echo "$url" >> "$FAKE_CURL_LOG"
case "$url" in
  https://lic.miko.ru:*)
    echo "curl: (7) Failed to connect to lic.miko.ru port 8443: Connection refused" >&2
    printf 000
    exit 7 ;;
esac
printf 200
"""


def test_ssh_probe_names_the_failing_stage_on_a_legacy_pbx(start_fleet, run_playbook, tmp_path: Path):
    fleet = start_fleet(count=1, generation="legacy", time_scale=0.05)
    host = fleet.names()[0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    curl = bindir / "curl"
    curl.write_text(FAKE_CURL)
    curl.chmod(curl.stat().st_mode | stat.S_IXUSR)
    curl_log = tmp_path / "curl.log"
    report_dir = tmp_path / "report"
    play = {
        "name": "Preflight of a 2024.1 PBX with the SSH probe",
        "hosts": "all",
        "gather_facts": False,
        "vars": {
            "mikopbx_phases": ["preflight", "report"],
            "mikopbx_legacy_ssh_probe": True,
            "mikopbx_licensing_hosts": ["lic.miko.ru", "lic.mikopbx.com"],
            "mikopbx_licensing_port": 8443,
            "mikopbx_reachability_timeout": 3,
            "mikopbx_report_dir": str(report_dir),
            "mikopbx_report_print": False,
            "mikopbx_fail_on": {"unbound": None},
        },
        "roles": ["mikopbx.marketplace.mikopbx_marketplace"],
    }

    run = run_playbook(
        fleet,
        playbook=[play],
        extra_args=["-e", "ansible_connection=local"],
        env={
            "PATH": os.pathsep.join([str(bindir), VENV_BIN, os.environ.get("PATH", "")]),
            "FAKE_CURL_LOG": str(curl_log),
        },
    )

    # The probe ran once per licensing host, with the port asked for.
    assert sorted(curl_log.read_text().split()) == ["https://lic.miko.ru:8443/", "https://lic.mikopbx.com:8443/"]
    report = json.loads((report_dir / "mikopbx-fleet-report.json").read_text())
    [pbx] = [h for h in report["hosts"] if h["name"] == host]
    reach = pbx["reachability"]
    assert reach["method"] == "ssh_probe", reach
    assert {h["host"]: h["failed_stage"] for h in reach["hosts"]} == {"lic.miko.ru": "tcp", "lic.mikopbx.com": None}
    assert reach["reachable"] is False
    # The PBX's own licence ping (read in the licence-facts run) is kept next to the SSH verdict.
    assert reach["license_ping"] is not None and reach["license_ping"]["ok"] is True
    # A report-type finding: the summary fails the run because the unreachable threshold is 0.
    assert run.rc != 0
    assert "unreachable 1 > 0 (%s)" % host in run.output, run.output[-2000:]
