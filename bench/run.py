"""make bench: the fleet job of this collection against emulated fleets of 50, 200 and 500 MikoPBXs.

For every size two fresh fleets are started (2026.1 / REST v3, one PBX already holding the company
key): on the first the role runs (playbooks/register_fleet.yml), on the second a plain
ansible.builtin.uri playbook doing the same work (bench/plain_uri_playbook.yml). Each job runs twice:
the first run binds the fleet, the re-run must change nothing. Measured per run: wall time,
controller CPU time and peak RSS (ansible-playbook and all its workers and modules, from wait4),
HTTP requests per PBX by kind (the emulator's request log). Results: bench-output/results.json and
bench-output/results.md.

MikoPBX keys serve at most 10 hosts and the role's seat check stops a larger play before any change
(as designed); the emulator only counts seats, so each benchmark fleet gets one key with a seat per
PBX and the role runs with mikopbx_seat_check=false. The plain playbook has no such check.

Environment: BENCH_SIZES (comma-separated, default 50,200,500), BENCH_FORKS (default 50),
BENCH_TIME_SCALE (emulator time scale, default 0.05).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-output"
VBIN = Path(sys.executable).parent
SIZES = [int(s) for s in os.environ.get("BENCH_SIZES", "50,200,500").split(",") if s.strip()]
FORKS = int(os.environ.get("BENCH_FORKS", "50"))
TIME_SCALE = float(os.environ.get("BENCH_TIME_SCALE", "0.05"))

# Tasks that run a module (one module invocation per PBX each time they run on it), with the
# number of the collection's module functions each invocation performs: the role's licence-facts task
# runs mikopbx_license_info with its reachability and modules sections, i.e. the work of
# mikopbx_license_info, mikopbx_reachability and mikopbx_module_check in one run. "Requests per
# module" in the targets is per module function; the raw figure per module run is reported too.
ROLE_MODULE_TASKS = {
    "Read the licence facts of the PBX": 3,
    "Register the company (trial registration on one PBX)": 1,
    "Bind the PBX to the company key": 1,
    "Check the installed modules": 1,
}
PLAIN_MODULE_TASKS = {
    "Read the licence information": 1,
    "Read the stored key": 1,
    "Ask the PBX to ping the licensing service": 1,
    "Apply the company key where it is missing or has no seat": 1,
    "Read the installed modules": 1,
}
_TASK_RE = re.compile(r"^TASK \[(?:[^:\]]+ : )?(.+?)\] \*+")
_RESULT_RE = re.compile(r"^(ok|changed|fatal|failed): \[([^\]]+)\]")
_RECAP_RE = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")

sys.path.insert(0, str(ROOT / "tests" / "emulator"))
from mikopbx_emulator.harness import Fleet  # noqa: E402


def module_runs(output: str, module_tasks: dict[str, int]) -> tuple[int, int]:
    """(module invocations, module functions performed) of the run, from the result lines of module tasks."""
    runs, functions, current = 0, 0, None
    for line in output.splitlines():
        task = _TASK_RE.match(line)
        if task:
            current = task.group(1)
            continue
        if current in module_tasks and _RESULT_RE.match(line):
            runs += 1
            functions += module_tasks[current]
    return runs, functions


def recap(output: str) -> dict[str, int]:
    totals = {"hosts": 0, "changed_hosts": 0, "changed": 0, "failed": 0, "unreachable": 0}
    for line in output.splitlines():
        match = _RECAP_RE.match(line)
        if match:
            totals["hosts"] += 1
            totals["changed"] += int(match.group(3))
            totals["changed_hosts"] += int(match.group(3)) > 0
            totals["unreachable"] += int(match.group(4))
            totals["failed"] += int(match.group(5))
    return totals


def run_playbook(args: list[str], log: Path) -> dict[str, Any]:
    """Run ansible-playbook; wall time, CPU and peak RSS of its whole process tree (wait4)."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="0",
        PYTHONDONTWRITEBYTECODE="1",
    )
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(VBIN / "ansible-playbook"), "-f", str(FORKS), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "output": log.read_text(errors="replace"),
    }


def request_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, Any]:
    per_pbx = []
    for name, counts in after.items():
        prev = before.get(name, {})
        per_pbx.append({k: counts.get(k, 0) - prev.get(k, 0) for k in ("read", "write", "auth", "total")})
    n = len(per_pbx) or 1
    return {
        "per_pbx_mean": round(sum(p["total"] for p in per_pbx) / n, 2),
        "per_pbx_max": max((p["total"] for p in per_pbx), default=0),
        "reads": sum(p["read"] for p in per_pbx),
        "writes": sum(p["write"] for p in per_pbx),
        "logins": sum(p["auth"] for p in per_pbx),
        "total": sum(p["total"] for p in per_pbx),
    }


def bound_hosts(fleet: Fleet, key: str) -> int:
    return sum(1 for seat in fleet.control.seats(key))


def run_job(job: str, size: int, workdir: Path) -> dict[str, Any]:
    state = workdir / ("%s-%d" % (job, size))
    fleet = Fleet.start(
        count=size,
        generation="v3",
        state_dir=state,
        time_scale=TIME_SCALE,
        seed=size,
        rate_limit=False,
        fsync=False,
        timeout=300,
    )
    try:
        # One company key with a seat per PBX, held by pbx-001 at the start. MikoPBX keys serve at most
        # 10 hosts and the role's seat budget check stops larger fleets before any change (as designed);
        # the emulator only counts seats, so the benchmark gives the key enough and switches the check off.
        key = fleet.control.create_company("Bench LLC", email="bench@example.com", contact="Bench", seats=size)
        fleet.control.set_license_key("pbx-001", key, bind=True)
        if job == "role":
            playbook = [
                "playbooks/register_fleet.yml",
                "-e",
                "mikopbx_report_print=false",
                "-e",
                "mikopbx_seat_check=false",
            ]
            module_tasks = ROLE_MODULE_TASKS
        else:
            key_file = workdir / "company-key.json"
            key_file.write_text(json.dumps({"company_key": key}))
            key_file.chmod(0o600)
            playbook = ["bench/plain_uri_playbook.yml", "-e", "@%s" % key_file]
            module_tasks = PLAIN_MODULE_TASKS

        runs = {}
        for run in ("first", "rerun"):
            report = OUT / "reports" / ("%s-%d-%s" % (job, size, run))
            report.mkdir(parents=True, exist_ok=True)
            extra = ["-e", "mikopbx_report_dir=%s" % report, "-e", "report_path=%s/report.json" % report]
            log = OUT / "logs" / ("%s-%d-%s.log" % (job, size, run))
            before = fleet.control.requests_summary()
            result = run_playbook(["-i", str(fleet.inventory_path), *playbook, *extra], log)
            after = fleet.control.requests_summary()
            output = result.pop("output")
            result["recap"] = recap(output)
            result["requests"] = request_delta(before, after)
            result["module_runs"], result["module_functions"] = module_runs(output, module_tasks)
            total = result["requests"]["total"]
            n_runs, n_functions = result["module_runs"], result["module_functions"]
            result["requests_per_module_run"] = round(total / n_runs, 2) if n_runs else None
            result["requests_per_module"] = round(total / n_functions, 2) if n_functions else None
            result["bound_after"] = bound_hosts(fleet, key)
            runs[run] = result
            print(
                "  %-5s %4d PBXs %-5s rc=%d wall %7.1fs cpu %7.1fs rss %6.1f MB req/PBX %5.2f writes %4d changed %4d"
                % (
                    job,
                    size,
                    run,
                    result["rc"],
                    result["wall_s"],
                    result["cpu_s"],
                    result["peak_rss_mb"],
                    result["requests"]["per_pbx_mean"],
                    result["requests"]["writes"],
                    result["recap"]["changed"],
                ),
                flush=True,
            )
        return runs
    finally:
        fleet.stop()


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for size, jobs in results.items():
        role = jobs["role"]
        rerun = role["rerun"]
        per_module = rerun["requests_per_module"]
        checks.append(
            {
                "check": "%s PBXs: role completes, every PBX bound" % size,
                "ok": role["first"]["rc"] == 0 and role["first"]["bound_after"] == int(size),
            }
        )
        checks.append(
            {
                "check": "%s PBXs: idempotent re-run sends no write, changes nothing" % size,
                "ok": rerun["requests"]["writes"] == 0 and rerun["recap"]["changed"] == 0,
            }
        )
        checks.append(
            {
                "check": "%s PBXs: re-run <= 3 requests per PBX per module function (%s; %s per module run)"
                % (size, per_module, rerun["requests_per_module_run"]),
                "ok": per_module is not None and per_module <= 3,
            }
        )
        if int(size) == 200:
            for run in ("first", "rerun"):
                checks.append(
                    {
                        "check": "200 PBXs: role no slower than the plain uri playbook (%s run)" % run,
                        "ok": role[run]["wall_s"] <= jobs["plain"][run]["wall_s"],
                    }
                )
    return checks


def markdown(results: dict[str, Any], checks: list[dict[str, Any]]) -> str:
    lines = [
        "# make bench",
        "",
        "Forks %d, emulator time scale %s, 2026.1 (REST v3) fleets, one PBX holding the company key at the start."
        % (FORKS, TIME_SCALE),
        "CPU and peak RSS are those of ansible-playbook with all its workers and modules (wait4).",
        "",
        "| PBXs | job | run | rc | wall s | CPU s | peak RSS MB | requests/PBX | max/PBX | writes | logins "
        "| module runs | module functions | requests/module run | requests/module function | changed | bound after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, jobs in results.items():
        for job in ("role", "plain"):
            for run in ("first", "rerun"):
                r = jobs[job][run]
                lines.append(
                    "| %s | %s | %s | %d | %.1f | %.1f | %.1f | %.2f | %d | %d | %d | %d | %d | %s | %s | %d | %d |"
                    % (
                        size,
                        job,
                        run,
                        r["rc"],
                        r["wall_s"],
                        r["cpu_s"],
                        r["peak_rss_mb"],
                        r["requests"]["per_pbx_mean"],
                        r["requests"]["per_pbx_max"],
                        r["requests"]["writes"],
                        r["requests"]["logins"],
                        r["module_runs"],
                        r["module_functions"],
                        r["requests_per_module_run"],
                        r["requests_per_module"],
                        r["recap"]["changed"],
                        r["bound_after"],
                    )
                )
    lines += [
        "",
        "Ratios role / plain:",
        "",
        "| PBXs | run | wall | CPU | peak RSS | requests/PBX |",
        "|---|---|---|---|---|---|",
    ]
    for size, jobs in results.items():
        for run in ("first", "rerun"):
            role, plain = jobs["role"][run], jobs["plain"][run]
            lines.append(
                "| %s | %s | %s | %s | %s | %s |"
                % (
                    size,
                    run,
                    ratio(role["wall_s"], plain["wall_s"]),
                    ratio(role["cpu_s"], plain["cpu_s"]),
                    ratio(role["peak_rss_mb"], plain["peak_rss_mb"]),
                    ratio(role["requests"]["per_pbx_mean"], plain["requests"]["per_pbx_mean"]),
                )
            )
    lines += ["", "Targets:", ""]
    lines += ["- [%s] %s" % ("x" if c["ok"] else " ", c["check"]) for c in checks]
    return "\n".join(lines) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    (OUT / "logs").mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    print("make bench: sizes %s, forks %d (logs in bench-output/logs/)" % (SIZES, FORKS), flush=True)
    with tempfile.TemporaryDirectory(prefix="mikopbx-bench-") as tmp:
        for size in SIZES:
            results[str(size)] = {job: run_job(job, size, Path(tmp)) for job in ("role", "plain")}
            for run in ("first", "rerun"):
                role, plain = results[str(size)]["role"][run], results[str(size)]["plain"][run]
                results[str(size)].setdefault("ratios", {})[run] = {
                    "wall": ratio(role["wall_s"], plain["wall_s"]),
                    "cpu": ratio(role["cpu_s"], plain["cpu_s"]),
                    "peak_rss": ratio(role["peak_rss_mb"], plain["peak_rss_mb"]),
                    "requests_per_pbx": ratio(role["requests"]["per_pbx_mean"], plain["requests"]["per_pbx_mean"]),
                }
            # Keep partial results if a larger size is interrupted.
            (OUT / "results.json").write_text(
                json.dumps({"forks": FORKS, "time_scale": TIME_SCALE, "sizes": results}, indent=2) + "\n"
            )

    jobs_only = {size: {k: v for k, v in jobs.items() if k in ("role", "plain")} for size, jobs in results.items()}
    checks = targets(jobs_only)
    (OUT / "results.json").write_text(
        json.dumps({"forks": FORKS, "time_scale": TIME_SCALE, "sizes": results, "targets": checks}, indent=2) + "\n"
    )
    text = markdown(jobs_only, checks)
    (OUT / "results.md").write_text(text)
    print()
    print(text)
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
