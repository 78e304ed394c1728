"""Shared fixtures for the emulator's own tests: a small mixed fleet per test module."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from mikopbx_emulator.harness import Fleet

warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)

# The suite's helper modules (fidelity_helpers) import by name under any pytest import mode.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    sd = tmp_path_factory.mktemp("fleet")
    with Fleet.start(count=4, generation="mixed", state_dir=sd, time_scale=0.01, seed=7) as f:
        yield f


class Client:
    """A tiny requests wrapper bound to one emulated PBX (verifies TLS against the emulator CA)."""

    def __init__(self, fleet: Fleet, name: str) -> None:
        self.name = name
        self.hv: dict[str, Any] = fleet.hosts[name]
        self.base = self.hv["mikopbx_url"]
        self.s = requests.Session()
        # per request: REQUESTS_CA_BUNDLE in the environment would override a session-level verify
        self.ca = fleet.ca_path

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.s.get(self.base + path, timeout=30, verify=self.ca, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.s.post(self.base + path, timeout=30, verify=self.ca, **kw)

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.hv['mikopbx_api_key']}"}

    def legacy_login(self) -> None:
        r = self.post(
            "/admin-cabinet/session/start",
            data={"login": "admin", "password": self.hv["mikopbx_password"]},
            headers={"X-Requested-With": "XMLHttpRequest"},
        )
        assert r.status_code == 200 and r.json()["success"] is True, r.text


@pytest.fixture
def client(fleet: Fleet) -> Any:
    return lambda name: Client(fleet, name)
