"""Benchmark of the MikoPBX fleet emulator: startup time, memory, authenticated API throughput.

    .venv/bin/python bench/bench_emulator.py [--count 500] [--duration 10] [--concurrency 64]

1. Starts ``mikopbx-emulator fleet --count N`` (mixed generations by default) in a fresh state directory and
   measures the time until the inventory file exists (the emulator writes it only once every listener
   accepts connections).
2. Reads VmRSS / VmHWM of the emulator process (and of any children) from /proc.
3. Authenticates against every PBX the way a client does -- v3: the inventory's API key as
   ``Authorization: Bearer``; legacy: one admin-cabinet session login, then the PHPSESSID cookie -- and
   drives keep-alive HTTPS requests (aiohttp, one process, ``--concurrency`` coroutines spread evenly over all
   PBXs) at a cheap authenticated read: v3 ``GET /pbxcore/api/v3/system:checkAuth``, legacy
   ``GET /pbxcore/api/license/getLicenseInfo`` (the fleet is seeded with a company key so the licence read is
   a real one).  Requests are counted only in the measurement window after a warm-up.
4. Prints a summary and writes ``bench-output/emulator.json``.

Targets: start < 15 s, RSS < 1 GiB, >= 1000 authenticated requests/s in total.  The load generator runs on
the same machine (and cores) as the emulator; the CPU time of both is reported so the figure can be read
honestly.  Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"startup_s": 15.0, "rss_mib": 1024.0, "throughput_rps": 1000.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------ process facts


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in KiB from /proc/<pid>/status ({} if the process is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                key, _sep, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0])
    except FileNotFoundError:
        pass
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process in seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """pid and every process below it (the emulator is expected to be one process; children are counted)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory(pid: int) -> dict[str, Any]:
    pids = descendants(pid)
    per = {p: proc_status(p) for p in pids}
    return {
        "pids": len(pids),
        "rss_kib": sum(v.get("VmRSS", 0) for v in per.values()),
        "hwm_kib": sum(v.get("VmHWM", 0) for v in per.values()),
        "main_rss_kib": per.get(pid, {}).get("VmRSS", 0),
        "main_hwm_kib": per.get(pid, {}).get("VmHWM", 0),
    }


def cpu(pid: int) -> float:
    return sum(proc_cpu_s(p) for p in descendants(pid))


# ------------------------------------------------------------------------------------------ emulator


def emulator_command() -> list[str]:
    exe = Path(sys.executable).with_name("mikopbx-emulator")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mikopbx-emulator")
    return [found] if found else [sys.executable, "-m", "mikopbx_emulator"]


def start_emulator(args: argparse.Namespace, state_dir: Path) -> tuple[subprocess.Popen[bytes], float, Path, Any]:
    inventory = state_dir / "inventory.yml"
    cmd = emulator_command() + [
        "fleet", "--count", str(args.count), "--generation", args.generation, "--state-dir", str(state_dir),
        "--inventory-out", str(inventory), "--time-scale", str(args.time_scale),
        "--rate-limit", args.rate_limit, "--company-key-on", "all", "--seed", str(args.seed),
    ]  # fmt: skip
    log = open(state_dir / "emulator.log", "wb")  # noqa: SIM115 - open for the child's lifetime
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "tests" / "emulator") + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    while not inventory.exists():
        if proc.poll() is not None:
            log.close()
            tail = (state_dir / "emulator.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"emulator exited with {proc.returncode} before it was ready:\n{tail}")
        if time.monotonic() - t0 > args.start_timeout:
            stop_emulator(proc)
            raise SystemExit(f"emulator not ready after {args.start_timeout} s")
        time.sleep(0.01)
    return proc, time.monotonic() - t0, inventory, log


def stop_emulator(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the emulator we started (its own process group, created by start_new_session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------------------------------ load


@dataclass
class Target:
    name: str
    generation: str
    url: str
    headers: dict[str, str]


@dataclass
class Stats:
    ok: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    body_checks: Counter = field(default_factory=Counter)


async def login_all(session: aiohttp.ClientSession, hosts: dict[str, dict[str, Any]]) -> list[Target]:
    """Credentials per PBX: v3 API key; legacy one session login (PHPSESSID, sent explicitly per request because
    cookie jars ignore ports and every PBX shares 127.0.0.1)."""
    sem = asyncio.Semaphore(32)

    async def one(name: str, hv: dict[str, Any]) -> Target:
        base = hv["mikopbx_url"].rstrip("/")
        if hv["mikopbx_generation"] == "v3":
            return Target(
                name,
                "v3",
                base + "/pbxcore/api/v3/system:checkAuth",
                {"Authorization": f"Bearer {hv['mikopbx_api_key']}"},
            )
        async with (
            sem,
            session.post(
                base + "/admin-cabinet/session/start",
                data={"login": hv.get("mikopbx_username", "admin"), "password": hv["mikopbx_password"]},
                headers={"X-Requested-With": "XMLHttpRequest"},
            ) as resp,
        ):
            data = await resp.json(content_type=None)
            cookie = resp.cookies.get("PHPSESSID")
            if resp.status != 200 or not data.get("success") or cookie is None:
                raise SystemExit(f"legacy login failed on {name}: HTTP {resp.status} {data}")
        return Target(
            name, "legacy", base + "/pbxcore/api/license/getLicenseInfo", {"Cookie": f"PHPSESSID={cookie.value}"}
        )

    return list(await asyncio.gather(*(one(n, hv) for n, hv in sorted(hosts.items()))))


async def drive(
    session: aiohttp.ClientSession, targets: list[Target], concurrency: int, warmup: float, duration: float
) -> tuple[Stats, float]:
    stats = Stats()
    measure_from = time.monotonic() + warmup
    stop_at = measure_from + duration
    order = list(range(len(targets)))
    random.Random(1).shuffle(order)

    async def worker(i: int) -> None:
        j = i
        n = len(order)
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                return
            t = targets[order[j % n]]
            j += concurrency
            try:
                async with session.get(t.url, headers=t.headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                if t0 >= measure_from:
                    stats.errors[type(e).__name__] += 1
                continue
            t1 = time.monotonic()
            if t0 < measure_from or t1 > stop_at:
                continue  # warm-up, or finished after the window closed
            stats.statuses[status] += 1
            if status == 200:
                stats.ok += 1
                stats.latencies.append(t1 - t0)
                if stats.ok % 97 == 0:  # spot-check bodies without paying JSON for every answer
                    try:
                        body = json.loads(raw)
                        stats.body_checks[f"{t.generation}:result={body.get('result')}"] += 1
                    except ValueError:
                        stats.body_checks[f"{t.generation}:not-json"] += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return stats, duration


async def run_load(
    args: argparse.Namespace, hosts: dict[str, dict[str, Any]], ca: str, emulator_pid: int
) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=ca)
    connector = aiohttp.TCPConnector(ssl=ctx, limit=0, limit_per_host=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
    ) as session:
        t0 = time.monotonic()
        targets = await login_all(session, hosts)
        auth_s = time.monotonic() - t0
        cpu_client0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu_emu0 = cpu(emulator_pid)
        wall0 = time.monotonic()
        stats, duration = await drive(session, targets, args.concurrency, args.warmup, args.duration)
        wall = time.monotonic() - wall0
        cpu_client1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu_emu1 = cpu(emulator_pid)
    lat = sorted(stats.latencies)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

    client_cpu = (cpu_client1.ru_utime + cpu_client1.ru_stime) - (cpu_client0.ru_utime + cpu_client0.ru_stime)
    return {
        "targets": {
            "v3": sum(t.generation == "v3" for t in targets),
            "legacy": sum(t.generation == "legacy" for t in targets),
        },
        "requests": {
            "v3": "GET /pbxcore/api/v3/system:checkAuth (Bearer API key)",
            "legacy": "GET /pbxcore/api/license/getLicenseInfo (PHPSESSID session)",
        },
        "auth_setup_s": round(auth_s, 3),
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "duration_s": duration,
        "ok": stats.ok,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "errors": dict(stats.errors),
        "throughput_rps": round(stats.ok / duration, 1),
        "latency_ms": {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "max": pct(1.0),
            "mean": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
        },
        "body_spot_checks": dict(stats.body_checks),
        "cpu_s_during_load": {
            "client": round(client_cpu, 2),
            "emulator": round(cpu_emu1 - cpu_emu0, 2),
            "wall": round(wall, 2),
            "cores": os.cpu_count(),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        # requests served per CPU-second the emulator actually got: the capacity of one dedicated core
        "ok_per_emulator_cpu_s": round(stats.ok / max(cpu_emu1 - cpu_emu0, 1e-9), 1),
        "ok_per_client_cpu_s": round(stats.ok / max(client_cpu, 1e-9), 1),
        # a projection, not a measurement: the single-process emulator and the client each on one idle core
        "projected_rps_idle_one_core_each": round(
            min(stats.ok / max(cpu_emu1 - cpu_emu0, 1e-9), stats.ok / max(client_cpu, 1e-9)), 1
        ),
    }


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--count", type=int, default=500, help="PBXs in the fleet (default 500)")
    ap.add_argument("--generation", choices=["v3", "legacy", "mixed"], default="mixed")
    ap.add_argument("--duration", type=float, default=10.0, help="measurement window in seconds (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up before measuring (default 2 s)")
    ap.add_argument("--concurrency", type=int, default=64, help="concurrent keep-alive clients (default 64)")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument(
        "--rate-limit",
        choices=["on", "off"],
        default="on",
        help="the emulator's v3 nginx limiter (180/min/PBX); load is spread so it is not reached",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument("--output", type=Path, default=REPO / "bench-output" / "emulator.json")
    ap.add_argument("--keep-state", action="store_true", help="do not delete the state directory")
    args = ap.parse_args(argv)

    state_dir = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
    proc, startup_s, inventory, log = start_emulator(args, state_dir)
    try:
        mem_start = memory(proc.pid)
        inv = yaml.safe_load(inventory.read_text(encoding="utf-8"))
        hosts = inv["all"]["hosts"]
        ca = inv["all"]["vars"]["mikopbx_ca_path"]
        if len(hosts) != args.count:
            raise SystemExit(f"inventory lists {len(hosts)} hosts, expected {args.count}")
        load = asyncio.run(run_load(args, hosts, ca, proc.pid))
        mem_end = memory(proc.pid)
        alive = proc.poll() is None
    finally:
        stop_emulator(proc)
        log.close()
        if not args.keep_state:
            shutil.rmtree(state_dir, ignore_errors=True)

    rss_mib = max(mem_start["rss_kib"], mem_end["rss_kib"]) / 1024
    hwm_mib = mem_end["hwm_kib"] / 1024
    result = {
        "benchmark": "mikopbx-emulator",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fleet": {
            "count": args.count,
            "generation": args.generation,
            "time_scale": args.time_scale,
            "rate_limit": args.rate_limit,
            "emulator_alive_after_load": alive,
        },
        "startup_s": round(startup_s, 3),
        "memory": {
            "after_start": mem_start,
            "after_load": mem_end,
            "rss_mib": round(rss_mib, 1),
            "hwm_mib": round(hwm_mib, 1),
        },
        "load": load,
        "targets": TARGETS,
        "pass": {
            "startup": startup_s < TARGETS["startup_s"],
            "rss": hwm_mib < TARGETS["rss_mib"],
            "throughput": load["throughput_rps"] >= TARGETS["throughput_rps"],
            "no_errors": not load["errors"] and set(load["statuses"]) <= {"200"},
        },
        "note": "load generator (one aiohttp process) shares the machine's cores with the emulator; see "
        "load.cpu_s_during_load for the split",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"fleet: {args.count} PBXs ({load['targets']['v3']} v3, {load['targets']['legacy']} legacy)")
    print(f"startup: {startup_s:.2f} s (target < {TARGETS['startup_s']:.0f} s)")
    print(f"memory: RSS {rss_mib:.1f} MiB, peak (VmHWM) {hwm_mib:.1f} MiB (target < {TARGETS['rss_mib']:.0f} MiB)")
    print(
        f"throughput: {load['throughput_rps']:.0f} authenticated req/s over {load['duration_s']:.0f} s, "
        f"{load['concurrency']} clients (target >= {TARGETS['throughput_rps']:.0f}); "
        f"latency p50 {load['latency_ms']['p50']} ms p99 {load['latency_ms']['p99']} ms"
    )
    print(f"statuses: {load['statuses']} errors: {load['errors'] or 'none'}")
    c = load["cpu_s_during_load"]
    print(
        f"cpu during load: client {c['client']} s, emulator {c['emulator']} s, wall {c['wall']} s, "
        f"{c['cores']} cores, load average {c['loadavg_1m_after']}; "
        f"{load['ok_per_emulator_cpu_s']:.0f} answers per emulator CPU-second, "
        f"{load['ok_per_client_cpu_s']:.0f} per client CPU-second "
        f"(projection with one idle core each: {load['projected_rps_idle_one_core_each']:.0f} req/s)"
    )
    print(f"pass: {result['pass']}")
    print(f"written: {args.output}")
    return 0 if all(result["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
