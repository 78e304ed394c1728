"""Shared unit-test fixtures: the fake network (``fake_http``) and MikoPBX-shaped bodies.

The transport and body builders live in ``tests/unit/module_utils/mikopbx_fakes.py``; this file puts
that directory on ``sys.path`` so every unit test can ``from mikopbx_fakes import ...``.

Usage::

    def test_x(fake_http):
        fake_http.add("POST", "/pbxcore/api/v3/auth:login", json=v3_ok({"accessToken": "jwt"}),
                      cookies={"refreshToken": "r1"})
        ... run code ...
        assert fake_http.calls() == [("POST", "/pbxcore/api/v3/auth:login"), ...]
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import requests
import requests.adapters

_HELPERS = str(Path(__file__).resolve().parent / "module_utils")
if _HELPERS not in sys.path:
    sys.path.insert(0, _HELPERS)

import mikopbx_fakes  # noqa: E402
from mikopbx_fakes import FakeHTTP  # noqa: E402


@pytest.fixture
def fake_http(monkeypatch: pytest.MonkeyPatch) -> FakeHTTP:
    """The fake network for one test (patches ``HTTPAdapter.send`` for every session)."""
    fake = FakeHTTP()

    def send(adapter: Any, request: Any, **kwargs: Any) -> requests.Response:
        return fake.send(adapter, request, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return fake


@pytest.fixture(autouse=True)
def _isolated_login_memo(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Failed logins are remembered across clients (api.LoginFailureMemo); keep that per test."""
    monkeypatch.setenv("MIKOPBX_LOGIN_MEMO_DIR", str(tmp_path / "login-memo"))


@pytest.fixture(autouse=True)
def _modules_run_target_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run modules as they run on a target, whatever else the test session imported.

    Once any test imports controller code (filters import ``ansible.errors``), ansible-core 2.19
    considers the process a controller and sends ``module.warn`` to the display instead of the
    module's ``warnings`` result; a module under test must behave as it does on a real run.
    """
    monkeypatch.setattr("ansible.module_utils._internal.is_controller", False)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record sleeps (e.g. back-off of clients built by modules) instead of sleeping."""
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    return slept


@pytest.fixture
def bodies() -> types.SimpleNamespace:
    """The helpers of ``mikopbx_fakes`` as a namespace, for tests that prefer a fixture."""
    return types.SimpleNamespace(**{name: getattr(mikopbx_fakes, name) for name in mikopbx_fakes.__all__})
