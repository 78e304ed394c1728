"""Start an emulated fleet from Python (tests, demo, bench) and talk to its control API.

    with Fleet.start(count=3, generation="mixed", state_dir=tmp_path) as fleet:
        fleet.hosts["pbx-001"]["mikopbx_url"]
        fleet.control.state("pbx-001")

The fleet runs as a subprocess in its own session (so signals sent to the test runner's process
group do not hit it, and ``stop()`` can terminate the whole group).  Its stdout/stderr go to
``<state_dir>/emulator.log``; if it dies before it is ready, the error quotes the end of that log.
Only the standard library is used.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


class FleetError(RuntimeError):
    pass


class ControlError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"control {method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class ControlClient:
    """One method per row of the control table in docs/design.md §2 (plus a few extensions)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise ControlError(method, path, e.code, e.read().decode("utf-8", "replace")) from None
        return json.loads(raw) if raw else None

    @staticmethod
    def _q(s: str) -> str:
        return urllib.parse.quote(s, safe="")

    # --- fleet and PBX state
    def fleet(self) -> list[dict[str, Any]]:
        return self._call("GET", "/control/fleet")

    def inventory(self) -> dict[str, Any]:
        return self._call("GET", "/control/inventory")

    def state(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/control/pbx/{self._q(name)}/state")

    def requests(self, name: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/control/pbx/{self._q(name)}/requests")

    def clear_requests(self, name: str | None = None) -> Any:
        if name is None:
            return self._call("DELETE", "/control/requests")
        return self._call("DELETE", f"/control/pbx/{self._q(name)}/requests")

    def requests_summary(self) -> dict[str, dict[str, int]]:
        return self._call("GET", "/control/requests/summary")

    def write_count(self, name: str) -> int:
        return sum(1 for e in self.requests(name) if e["kind"] == "write")

    # --- faults
    def add_fault(self, fault: str, pbx: str | None = None, **params: Any) -> Any:
        body = {"name": fault, **params}
        if pbx is None:
            return self._call("POST", "/control/faults", body)
        return self._call("POST", f"/control/pbx/{self._q(pbx)}/faults", body)

    def clear_faults(self, pbx: str | None = None) -> Any:
        if pbx is None:
            return self._call("DELETE", "/control/faults")
        return self._call("DELETE", f"/control/pbx/{self._q(pbx)}/faults")

    def faults(self, pbx: str | None = None) -> list[dict[str, Any]]:
        if pbx is None:
            return self._call("GET", "/control/faults")
        return self._call("GET", f"/control/pbx/{self._q(pbx)}/faults")

    # --- seeding
    def set_license_key(self, name: str, key: str, bind: bool = True) -> dict[str, Any]:
        """Seeds PBXLicense; with bind also takes a seat.  Raises ControlError(409) when binding
        fails (the key is stored anyway, like a restored backup without a seat)."""
        return self._call("PUT", f"/control/pbx/{self._q(name)}/license-key", {"key": key, "bind": bind})

    def set_modules(self, name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._call("PUT", f"/control/pbx/{self._q(name)}/modules", rows)

    def set_options(self, name: str, **options: Any) -> dict[str, Any]:
        """Options: localhost_bypass (bool), rate_limit (bool), fail2ban (bool)."""
        return self._call("PUT", f"/control/pbx/{self._q(name)}/options", options)

    def set_password(self, name: str, password: str) -> dict[str, Any]:
        """Rotate the PBX's web admin password (sessions and refresh tokens end; the inventory keeps
        the old password)."""
        return self._call("PUT", f"/control/pbx/{self._q(name)}/password", {"password": password})

    def unban(self, name: str) -> dict[str, Any]:
        """Lift a fail2ban ban and reset the login/rate-limit counters of that PBX."""
        return self._call("DELETE", f"/control/pbx/{self._q(name)}/bans")

    def snapshot(self, name: str) -> str:
        return self._call("POST", f"/control/pbx/{self._q(name)}/snapshot", {})["snapshot"]

    def restore(self, name: str, snapshot: str, new_machine: bool = False) -> dict[str, Any]:
        return self._call(
            "POST", f"/control/pbx/{self._q(name)}/restore", {"snapshot": snapshot, "new_machine": new_machine}
        )

    def license_check(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/control/pbx/{self._q(name)}/license-check", {})

    # --- licensing service / cabinet
    def create_company(
        self,
        companyname: str = "Example LLC",
        email: str = "",
        contact: str = "",
        seats: int = 10,
        products: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        body = {
            "companyname": companyname,
            "email": email,
            "contact": contact,
            "seats": seats,
            "products": products or [],
            **extra,
        }
        return self._call("POST", "/control/licensing/companies", body)["key"]

    def companies(self) -> list[dict[str, Any]]:
        return self._call("GET", "/control/licensing/companies")

    def company(self, key: str) -> dict[str, Any]:
        return self._call("GET", f"/control/licensing/keys/{self._q(key)}")

    def update_company(self, key: str, **patch: Any) -> dict[str, Any]:
        """patch: companyname, email, contact, tel, inn, revoked (bool), products (list)."""
        return self._call("PATCH", f"/control/licensing/keys/{self._q(key)}", patch)

    def create_coupon(self, **spec: Any) -> str:
        """spec: product_id, feature_id, add_count, expired, for_key, state (new|used|blocked), code."""
        return self._call("POST", "/control/licensing/coupons", spec)["coupon"]

    def seats(self, key: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/control/cabinet/keys/{self._q(key)}/seats")

    def free_seat(self, key: str, machine_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/control/cabinet/keys/{self._q(key)}/seats/{self._q(machine_id)}")

    # --- clock
    def advance_clock(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/control/clock/advance", {"seconds": seconds})

    def clock(self) -> dict[str, Any]:
        return self._call("GET", "/control/clock")


class Fleet:
    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        state_dir: Path,
        inventory_path: Path,
        log_path: Path,
        log_file: Any,
        start_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.proc = proc
        self.start_kwargs = dict(start_kwargs or {})
        self.state_dir = state_dir
        self.inventory_path = inventory_path
        self.log_path = log_path
        self._log_file = log_file
        inv = json.loads((state_dir / "inventory.json").read_text())
        self.vars: dict[str, Any] = inv["all"]["vars"]
        self.hosts: dict[str, dict[str, Any]] = inv["all"]["hosts"]
        self.control_url: str = self.vars["mikopbx_emulator_control_url"]
        self.ca_path: str = self.vars["mikopbx_ca_path"]
        self.control = ControlClient(self.control_url)

    @classmethod
    def start(
        cls,
        count: int = 3,
        generation: str = "v3",
        state_dir: str | os.PathLike[str] | None = None,
        time_scale: float = 1.0,
        seed: int | None = None,
        base_port: int = 0,
        control_port: int = 0,
        company_key_on: str | None = None,
        inventory_out: str | os.PathLike[str] | None = None,
        rate_limit: bool = True,
        fsync: bool = True,
        exit_with_parent: bool = True,
        extra_args: list[str] | None = None,
        timeout: float = 60.0,
        python: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Fleet:
        sd = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="mikopbx-fleet-"))
        sd.mkdir(parents=True, exist_ok=True)
        sd = sd.resolve()
        inv = Path(inventory_out).resolve() if inventory_out else sd / "inventory.yml"
        for stale in (inv, sd / "inventory.json"):
            try:
                stale.unlink()
            except FileNotFoundError:
                pass
        cmd = [
            python or sys.executable,
            "-m",
            "mikopbx_emulator",
            "fleet",
            "--count",
            str(count),
            "--generation",
            generation,
            "--state-dir",
            str(sd),
            "--time-scale",
            repr(float(time_scale)),
            "--base-port",
            str(base_port),
            "--control-port",
            str(control_port),
            "--inventory-out",
            str(inv),
            "--rate-limit",
            "on" if rate_limit else "off",
        ]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        if company_key_on:
            cmd += ["--company-key-on", company_key_on]
        if not fsync:
            cmd.append("--no-fsync")
        if exit_with_parent:
            cmd.append("--exit-with-parent")
        cmd += extra_args or []
        log_path = sd / "emulator.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        penv = dict(os.environ if env is None else env)
        # make the package importable even when it is not pip-installed
        pkg_root = str(Path(__file__).resolve().parent.parent)
        penv["PYTHONPATH"] = pkg_root + (os.pathsep + penv["PYTHONPATH"] if penv.get("PYTHONPATH") else "")
        penv.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=penv
        )
        deadline = time.monotonic() + timeout
        while True:
            if inv.exists() and (sd / "inventory.json").exists():
                break
            rc = proc.poll()
            if rc is not None:
                log_file.close()
                raise FleetError(
                    f"emulator exited with code {rc} before it was ready; "
                    f"last log lines ({log_path}):\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                _terminate(proc)
                log_file.close()
                raise FleetError(
                    f"emulator not ready after {timeout:.0f}s; last log lines ({log_path}):\n{_tail(log_path)}"
                )
            time.sleep(0.05)
        kwargs = {
            "count": count,
            "generation": generation,
            "state_dir": sd,
            "time_scale": time_scale,
            "seed": seed,
            "base_port": base_port,
            "control_port": control_port,
            "company_key_on": company_key_on,
            "inventory_out": inventory_out,
            "rate_limit": rate_limit,
            "fsync": fsync,
            "exit_with_parent": exit_with_parent,
            "extra_args": extra_args,
            "timeout": timeout,
            "python": python,
            "env": env,
        }
        return cls(proc, sd, inv, log_path, log_file, kwargs)

    def restart(self, *, kill: bool = False, **overrides: Any) -> Fleet:
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again on the same state directory;
        returns the new Fleet (ports, passwords, keys, seats and modules are kept)."""
        if kill:
            self.kill()
        else:
            self.stop()
        return Fleet.start(**(self.start_kwargs | overrides))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def url(self, name: str) -> str:
        return str(self.hosts[name]["mikopbx_url"])

    def stop(self, timeout: float = 15.0) -> int | None:
        rc = _terminate(self.proc, timeout)
        if not self._log_file.closed:
            self._log_file.close()
        return rc

    def kill(self) -> None:
        """SIGKILL (for durability tests): nothing acknowledged may be lost."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if not self._log_file.closed:
            self._log_file.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return proc.poll()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
