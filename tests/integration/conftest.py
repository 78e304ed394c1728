"""Shared fixtures for integration tests: an emulated MikoPBX fleet and a playbook runner.

* ``start_fleet(count=1, generation="v3", **options)`` starts a fleet with
  :class:`mikopbx_emulator.harness.Fleet` in the test's ``tmp_path`` and stops it afterwards; it
  returns an :class:`EmulatedFleet` with the inventory, the host variables and a small control-API
  client (:class:`Control`, plain HTTP against the endpoint documented in docs/design.md §2).
* ``run_playbook`` runs tasks (or a whole play) with ``ansible-playbook`` against that inventory
  and returns a :class:`PlaybookRun`: return code, the complete output (for secret greps) and the
  registered result of every task per host, parsed from JSON that the play itself writes.

Nothing here knows about a particular module; the tests of every module can use it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS_PATH = REPO_ROOT / ".collections"
BIN_DIR = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN_DIR / "ansible-playbook"
PLAYBOOK_TIMEOUT = 600

# Connection options of every collection module, from the emulator's inventory variables.
CONNECTION_V3 = {
    "url": "{{ mikopbx_url }}",
    "api_key": "{{ mikopbx_api_key }}",
    "ca_path": "{{ mikopbx_ca_path }}",
}
CONNECTION_PASSWORD = {
    "url": "{{ mikopbx_url }}",
    "username": "{{ mikopbx_username }}",
    "password": "{{ mikopbx_password }}",
    "ca_path": "{{ mikopbx_ca_path }}",
}
# The API key where the generation has one (v3), else the password; the generation as the inventory
# says (as an operator who knows the fleet would configure it; CONNECTION_DETECT leaves it to the client).
CONNECTION_AUTO = {
    "url": "{{ mikopbx_url }}",
    "api_generation": "{{ mikopbx_generation | default('auto') }}",
    "api_key": "{{ mikopbx_api_key | default(omit) }}",
    "username": "{{ omit if mikopbx_api_key is defined else mikopbx_username }}",
    "password": "{{ omit if mikopbx_api_key is defined else mikopbx_password }}",
    "ca_path": "{{ mikopbx_ca_path }}",
}

CONNECTION_DETECT = {k: v for k, v in CONNECTION_AUTO.items() if k != "api_generation"}


# ------------------------------------------------------------------ emulator control API


class Control:
    """The emulator's control endpoint (JSON over plain HTTP on 127.0.0.1)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # never through a proxy

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.session.request(method, self.base_url + path, json=body, timeout=60)
        if response.status_code >= 400:
            raise AssertionError("control %s %s -> %s %s" % (method, path, response.status_code, response.text[:500]))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def fleet(self) -> list[dict[str, Any]]:
        return self._call("GET", "/control/fleet")

    def state(self, pbx: str) -> dict[str, Any]:
        return self._call("GET", "/control/pbx/%s/state" % pbx)

    def stored_key(self, pbx: str) -> str:
        return (self.state(pbx).get("settings") or {}).get("PBXLicense") or ""

    def requests(self, pbx: str) -> list[dict[str, Any]]:
        return self._call("GET", "/control/pbx/%s/requests" % pbx)

    def clear_requests(self, pbx: str) -> None:
        self._call("DELETE", "/control/pbx/%s/requests" % pbx)

    def request_kinds(self, pbx: str) -> dict[str, int]:
        """``{"read": n, "write": n, "auth": n, "total": n}`` from the PBX's request log."""
        counts = {"read": 0, "write": 0, "auth": 0}
        log = self.requests(pbx)
        for entry in log:
            counts[entry.get("kind", "read")] = counts.get(entry.get("kind", "read"), 0) + 1
        counts["total"] = len(log)
        return counts

    def summary(self) -> dict[str, dict[str, int]]:
        return self._call("GET", "/control/requests/summary")

    def add_fault(self, name: str, pbx: str | None = None, **params: Any) -> None:
        path = "/control/pbx/%s/faults" % pbx if pbx else "/control/faults"
        self._call("POST", path, dict(params, name=name))

    def clear_faults(self, pbx: str | None = None) -> None:
        self._call("DELETE", "/control/pbx/%s/faults" % pbx if pbx else "/control/faults")

    def seed_key(self, pbx: str, key: str, bind: bool = True) -> None:
        self._call("PUT", "/control/pbx/%s/license-key" % pbx, {"key": key, "bind": bind})

    def create_company(self, companyname: str = "Example LLC", email: str = "it@example.com", **extra: Any) -> str:
        body = dict(extra, companyname=companyname, email=email)
        body.setdefault("contact", "Jane Doe")
        return self._call("POST", "/control/licensing/companies", body)["key"]

    def companies(self) -> list[dict[str, Any]]:
        """Every company the emulated licensing service knows (one per registration)."""
        return self._call("GET", "/control/licensing/companies")

    def create_coupon(self, for_key: str | None = None, **extra: Any) -> str:
        body = dict(extra)
        if for_key:
            body["for_key"] = for_key
        return self._call("POST", "/control/licensing/coupons", body)["coupon"]

    def seats(self, key: str) -> list[dict[str, Any]]:
        return self._call("GET", "/control/cabinet/keys/%s/seats" % key)

    def advance_clock(self, seconds: float) -> None:
        self._call("POST", "/control/clock/advance", {"seconds": seconds})


# ------------------------------------------------------------------ fleet


@dataclass
class EmulatedFleet:
    handle: Any  # mikopbx_emulator.harness.Fleet
    inventory_path: Path
    hosts: dict[str, dict[str, Any]]
    group_vars: dict[str, Any]
    control: Control
    state_dir: Path

    def names(self, generation: str | None = None) -> list[str]:
        return [n for n, v in self.hosts.items() if generation is None or v.get("mikopbx_generation") == generation]

    def first(self, generation: str) -> str:
        names = self.names(generation)
        assert names, "the fleet has no %s PBX" % generation
        return names[0]

    def var(self, host: str, name: str) -> Any:
        return self.hosts[host].get(name, self.group_vars.get(name))


def _load_inventory(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    group = document.get("all") or {}
    return dict(group.get("hosts") or {}), dict(group.get("vars") or {})


@pytest.fixture
def start_fleet(tmp_path: Path) -> Iterator[Callable[..., EmulatedFleet]]:
    """Start an emulated fleet in ``tmp_path`` (stopped at teardown); call it with ``Fleet.start``
    keyword arguments, e.g. ``start_fleet(count=2, generation="mixed", time_scale=0.05)``."""
    harness = pytest.importorskip("mikopbx_emulator.harness", reason="the emulator package is not installed")
    started: list[Any] = []

    def start(count: int = 1, generation: str = "v3", **options: Any) -> EmulatedFleet:
        state_dir = tmp_path / ("fleet-%d" % len(started))
        handle = harness.Fleet.start(count=count, generation=generation, state_dir=state_dir, **options)
        started.append(handle)
        inventory = Path(handle.inventory_path)
        hosts, group_vars = _load_inventory(inventory)
        control_url = group_vars.get("mikopbx_emulator_control_url")
        assert control_url, "the emulator inventory has no mikopbx_emulator_control_url"
        return EmulatedFleet(handle, inventory, hosts, group_vars, Control(control_url), state_dir)

    yield start
    for handle in reversed(started):
        handle.stop()


# ------------------------------------------------------------------ ansible-playbook runner


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> task name -> registered result
    command: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.stdout + "\n" + self.stderr

    def failures(self) -> dict[str, dict[str, Any]]:
        """Results of tasks that failed a host (``fatal: [host]: FAILED! => {...}`` in the output),
        for tasks run with ``ignore_errors: false`` whose hosts then write no result file."""
        found: dict[str, dict[str, Any]] = {}
        for match in _FATAL_RE.finditer(self.stdout):
            try:
                found[match.group(1)] = json.loads(match.group(2))
            except ValueError:
                found[match.group(1)] = {"failed": True, "msg": match.group(2)}
        return found

    def result(self, host: str, task: str | None = None) -> dict[str, Any]:
        """The registered result of ``task`` (default: the only/first task) on ``host``."""
        assert host in self.results, "no results for %s; rc=%s\n%s" % (host, self.rc, self.output[-4000:])
        per_host = self.results[host]
        if task is None:
            task = next(iter(per_host))
        value = per_host.get(task)
        assert value is not None, "task %r did not run on %s\n%s" % (task, host, self.output[-4000:])
        return value


_FATAL_RE = re.compile(r"^fatal: \[([^\]]+)\]: FAILED! => (\{.*\})\s*$", re.MULTILINE)


def _ansible_env(workdir: Path, extra: dict[str, str] | None) -> dict[str, str]:
    cfg = workdir / "ansible.cfg"
    if not cfg.exists():
        cfg.write_text(
            "[defaults]\nretry_files_enabled = false\nhost_key_checking = false\n"
            "interpreter_python = auto_silent\nnocows = true\n",
            encoding="utf-8",
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MIKOPBX_"))}
    env.update(
        ANSIBLE_CONFIG=str(cfg),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_PATH),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_LOCAL_TEMP=str(workdir / ".ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_DEPRECATION_WARNINGS="false",
        PATH=str(BIN_DIR) + os.pathsep + os.environ.get("PATH", ""),
        # Login sessions are reused across the tasks of a run (api.SessionCache); each run starts
        # without stored sessions, so its request counts do not depend on earlier runs of the test
        # (pass env={"MIKOPBX_SESSION_CACHE_DIR": ...} to share them between runs).
        MIKOPBX_SESSION_CACHE_DIR=str(workdir / "mikopbx-sessions"),
    )
    env.update(extra or {})
    return env


def _task_name(index: int, task: dict[str, Any]) -> str:
    return str(task.get("name") or "task%d" % index)


def build_play(
    tasks: list[dict[str, Any]],
    results_dir: Path,
    *,
    hosts: str = "all",
    connection: dict[str, Any] | None = None,
    play_extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One play: every task registered and allowed to fail, then the results written as JSON.

    A task is ``{"name": ..., "<module>": {args}, ...}``; a ``connection`` dict is merged into the
    arguments of every task whose module is in this collection (``"connection": None`` in a task
    opts it out).
    """
    play_tasks: list[dict[str, Any]] = []
    names: list[str] = []
    variables: list[str] = []
    for index, task in enumerate(tasks):
        task = dict(task)
        name = _task_name(index, task)
        names.append(name)
        # A task's own ``register`` is kept (later tasks may use it) and collected under that name.
        variables.append(str(task.get("register") or "_r%d" % index))
        use_connection = task.pop("connection", connection)
        for key, value in list(task.items()):
            if key.startswith("mikopbx.marketplace.") and use_connection:
                task[key] = dict(use_connection, **(value or {}))
        task.setdefault("name", name)
        task["register"] = variables[-1]
        task.setdefault("ignore_errors", True)
        play_tasks.append(task)

    pairs = zip(names, variables, strict=True)
    collected = "{" + ", ".join("%s: (%s | default(none))" % (json.dumps(n), v) for n, v in pairs) + "}"
    play_tasks.append(
        {
            "name": "zz_write_results",
            "ansible.builtin.copy": {
                "content": "{{ %s | to_json }}" % collected,
                "dest": "%s/{{ inventory_hostname }}.json" % results_dir,
                "mode": "0600",
            },
            "check_mode": False,
            "diff": False,
            "no_log": True,
        }
    )
    play = {"name": "integration", "hosts": hosts, "gather_facts": False, "tasks": play_tasks}
    play.update(play_extra or {})
    return [play]


@pytest.fixture
def run_playbook(tmp_path: Path) -> Callable[..., PlaybookRun]:
    """Run tasks against a fleet's inventory with ansible-playbook; see :func:`build_play`.

    Keyword arguments: ``check``, ``diff``, ``verbosity`` (0-4), ``limit``, ``env`` (added to a
    clean environment: ANSIBLE_*/MIKOPBX_* variables of the caller are dropped), ``connection``,
    ``extra_args``, ``play_extra``, or ``playbook`` (a full play list instead of ``tasks``).
    The default ``connection`` is CONNECTION_AUTO: the generation comes from the emulator's inventory,
    so no detection request is sent and request counts are the module's own.
    """
    counter = {"n": 0}

    def run(
        fleet: EmulatedFleet,
        tasks: list[dict[str, Any]] | None = None,
        *,
        playbook: list[dict[str, Any]] | None = None,
        check: bool = False,
        diff: bool = False,
        verbosity: int = 0,
        limit: str | None = None,
        env: dict[str, str] | None = None,
        connection: dict[str, Any] | None = None,
        extra_args: list[str] | None = None,
        play_extra: dict[str, Any] | None = None,
    ) -> PlaybookRun:
        counter["n"] += 1
        workdir = tmp_path / ("run-%d" % counter["n"])
        results_dir = workdir / "results"
        results_dir.mkdir(parents=True)
        if playbook is None:
            playbook = build_play(
                tasks or [],
                results_dir,
                connection=CONNECTION_AUTO if connection is None else connection,
                play_extra=play_extra,
            )
        playbook_path = workdir / "playbook.yml"
        playbook_path.write_text(yaml.safe_dump(playbook, allow_unicode=True, sort_keys=False), encoding="utf-8")

        command = [str(ANSIBLE_PLAYBOOK), "-i", str(fleet.inventory_path), str(playbook_path)]
        if check:
            command.append("--check")
        if diff:
            command.append("--diff")
        if verbosity:
            command.append("-" + "v" * verbosity)
        if limit:
            command += ["--limit", limit]
        command += extra_args or []

        completed = subprocess.run(
            command,
            cwd=workdir,
            env=_ansible_env(workdir, env),
            capture_output=True,
            text=True,
            timeout=PLAYBOOK_TIMEOUT,
            check=False,
        )
        results: dict[str, dict[str, Any]] = {}
        for path in sorted(results_dir.glob("*.json")):
            results[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        return PlaybookRun(completed.returncode, completed.stdout, completed.stderr, results, command)

    return run


@pytest.fixture
def connections() -> Any:
    """The connection option sets above: ``auto`` (API key where there is one, generation from the
    inventory), ``detect`` (the same without api_generation), ``v3``, ``password``."""
    import types

    return types.SimpleNamespace(
        auto=dict(CONNECTION_AUTO),
        detect=dict(CONNECTION_DETECT),
        v3=dict(CONNECTION_V3),
        password=dict(CONNECTION_PASSWORD),
    )


@pytest.fixture(autouse=True)
def _isolated_session_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Clients built in the test process keep their stored sessions (api.SessionCache) per test."""
    monkeypatch.setenv("MIKOPBX_SESSION_CACHE_DIR", str(tmp_path / "client-sessions"))


@pytest.fixture
def pbx_client() -> Callable[..., Any]:
    """A collection API client for one host of a fleet (for independent reads in assertions)."""

    def make(fleet: EmulatedFleet, host: str, **options: Any) -> Any:
        from ansible_collections.mikopbx.marketplace.plugins.module_utils.api import MikoPBXClient

        hostvars = fleet.hosts[host]
        kwargs: dict[str, Any] = dict(ca_path=fleet.var(host, "mikopbx_ca_path"))
        if hostvars.get("mikopbx_api_key") and not options.get("username"):
            kwargs["api_key"] = hostvars["mikopbx_api_key"]
        else:
            kwargs["username"] = hostvars.get("mikopbx_username")
            kwargs["password"] = hostvars.get("mikopbx_password")
            kwargs["generation"] = hostvars.get("mikopbx_generation")
        kwargs.update(options)
        return MikoPBXClient(hostvars["mikopbx_url"], **kwargs)

    return make
