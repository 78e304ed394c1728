"""The example playbook in README.md runs as written against an emulated fleet, and is idempotent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS_PATH = REPO_ROOT / ".collections"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

# The only change to the README's play: the CA file is the emulator's, not /etc/ssl/....
README_CA_PATH = "/etc/ssl/mikopbx-ca.pem"


def readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Example\n", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match, "README.md has no yaml block under '## Example'"
    return match.group(1)


def run_play(playbook: Path, inventory: Path, key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MIKOPBX_"))}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS_PATH)
    env["ANSIBLE_NOCOLOR"] = "1"
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), "-e", "company_license_key=" + key],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def recap_changed(output: str) -> dict[str, int]:
    return {host: int(changed) for host, changed in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}


def test_readme_example_runs_and_is_idempotent(start_fleet, tmp_path: Path) -> None:
    fleet = start_fleet(count=2, generation="v3")
    key = fleet.control.create_company("Readme Example LLC", email="ops@example.com")

    # The README's play targets a group named "mikopbx".
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump({"all": {"vars": fleet.group_vars, "children": {"mikopbx": {"hosts": fleet.hosts}}}}),
        encoding="utf-8",
    )
    example = readme_example()
    assert README_CA_PATH in example
    playbook = tmp_path / "example.yml"
    playbook.write_text(example.replace(README_CA_PATH, '"{{ mikopbx_ca_path }}"'), encoding="utf-8")

    first = run_play(playbook, inventory, key)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert recap_changed(first.stdout) == {name: 1 for name in fleet.hosts}  # the key was applied

    second = run_play(playbook, inventory, key)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
    assert recap_changed(second.stdout) == {name: 0 for name in fleet.hosts}
    assert key not in first.stdout + second.stdout
