"""The collection's packaging metadata agrees with itself and with the plugins that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]

EXPECTED_MODULES = {
    "mikopbx_register",
    "mikopbx_license_binding",
    "mikopbx_module_check",
    "mikopbx_license_info",
    "mikopbx_reachability",
}


def load_yaml(relative: str) -> dict:
    return yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def galaxy() -> dict:
    return load_yaml("galaxy.yml")


@pytest.fixture(scope="module")
def runtime() -> dict:
    return load_yaml("meta/runtime.yml")


def test_galaxy_identity(galaxy: dict) -> None:
    assert (galaxy["namespace"], galaxy["name"]) == ("mikopbx", "marketplace")
    assert Version(galaxy["version"]) >= Version("0.1.0")
    assert galaxy["license"] == ["GPL-3.0-or-later"]
    assert galaxy["dependencies"] == {}
    assert galaxy["readme"] == "README.md" and (ROOT / "README.md").is_file()


@pytest.mark.parametrize(
    "local_path", [".venv", ".venv-2.21", ".collections", "build", "tests/output", ".ci", "molecule"]
)
def test_galaxy_build_ignores_local_state(galaxy: dict, local_path: str) -> None:
    ignored = set(galaxy["build_ignore"])
    assert local_path in ignored or any(
        pattern.endswith("*") and local_path.startswith(pattern[:-1]) for pattern in ignored
    )


@pytest.mark.parametrize("core_version", ["2.19.0", "2.19.14", "2.21.5"])
def test_requires_ansible_admits_tested_versions(runtime: dict, core_version: str) -> None:
    assert Version(core_version) in SpecifierSet(runtime["requires_ansible"])


def test_requires_ansible_rejects_older_core(runtime: dict) -> None:
    assert Version("2.18.9") not in SpecifierSet(runtime["requires_ansible"])


def test_action_group_lists_the_modules(runtime: dict) -> None:
    assert set(runtime["action_groups"]["mikopbx"]) == EXPECTED_MODULES


def test_every_shipped_module_is_in_the_action_group(runtime: dict) -> None:
    shipped = {path.stem for path in (ROOT / "plugins" / "modules").glob("mikopbx_*.py")}
    assert shipped <= set(runtime["action_groups"]["mikopbx"])


def test_collection_link_points_at_the_repository() -> None:
    link = ROOT / ".collections" / "ansible_collections" / "mikopbx" / "marketplace"
    assert link.resolve() == ROOT
