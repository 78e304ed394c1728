"""Command line: ``mikopbx-emulator fleet ...`` (docs/design.md §2)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import sys
from pathlib import Path

from .server import FleetOptions, run_fleet

DESCRIPTION = """\
MikoPBX fleet emulator.  One process hosts N emulated MikoPBX stations, each on its own HTTPS
listener on 127.0.0.1, plus one shared emulated licensing service and releases server (in-process;
no real network address is ever contacted) and a plain-HTTP control endpoint on 127.0.0.1.
See tests/emulator/README.md and docs/design.md §2."""

FLEET_EPILOG = """\
Generations: v3 = MikoPBX 2026.1 REST API (/pbxcore/api/v3, JWT or API key);
legacy = 2024.1 (/pbxcore/api/..., admin-cabinet PHPSESSID session); mixed = v3, legacy, v3, ...

Readiness: the inventory (YAML; a JSON copy is written to <state-dir>/inventory.json) appears only
after every listener accepts connections.  The process stays in the foreground until SIGINT or
SIGTERM, then shuts down cleanly.

Localhost bypass: every emulated PBX listens on 127.0.0.1, so the real "no credentials from
localhost" rule would let every test in.  The emulator applies it only to requests that carry
the header 'X-Emulator-Localhost: 1' (and no Authorization header on v3), or when the PBX option
localhost_bypass is switched on via PUT /control/pbx/{name}/options.

Time: --time-scale 0.01 makes every wait 100x shorter and every expiry 100x sooner (emulated
clock runs 1/F times faster); POST /control/clock/advance jumps forward.

Faults (POST /control/faults or /control/pbx/{name}/faults with {"name": ..., params}):
licensing_down, licensing_slow{delay}, licensing_5xx, egress_blocked{hosts}, dns_failure{hosts},
tls_intercept{hosts}, worker_timeout{count,match,apply}, db_locked{count,match},
queue_full{count,match}, rate_limit{count,match}.

Control API (plain HTTP on 127.0.0.1, JSON): GET /control/fleet, /control/inventory,
/control/pbx/{name}/state, /control/pbx/{name}/requests (DELETE clears), /control/requests/summary;
POST|DELETE|GET /control/faults and /control/pbx/{name}/faults; PUT /control/pbx/{name}/license-key
{key,bind}, /modules [rows], /options {localhost_bypass,rate_limit,fail2ban}; DELETE
/control/pbx/{name}/bans; POST /control/pbx/{name}/snapshot, /restore {snapshot,new_machine},
/license-check; POST|GET /control/licensing/companies; GET|PATCH /control/licensing/keys/{key};
POST /control/licensing/coupons; GET /control/cabinet/keys/{key}/seats; DELETE
/control/cabinet/keys/{key}/seats/{machine_id}; POST /control/clock/advance {seconds}; GET /control/clock.
Python: mikopbx_emulator.harness.Fleet.start(...) runs this command and returns a handle with
.hosts, .inventory_path, .ca_path and .control (one method per endpoint).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mikopbx-emulator", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (one line per request at INFO; secrets are never logged)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser(
        "fleet",
        help="run a fleet of emulated PBXs",
        description=DESCRIPTION,
        epilog=FLEET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--count", type=int, default=3, help="number of PBXs (pbx-001 ...); default 3")
    f.add_argument(
        "--generation",
        choices=["v3", "legacy", "mixed"],
        default="v3",
        help="API generation of new PBXs; mixed alternates v3, legacy, v3, ... (default v3)",
    )
    f.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="directory for all persistent state (PBXs, licensing service, CA, snapshots); "
        "restarting with the same directory keeps ports, passwords, API keys, keys, seats, "
        "modules.  Default: a new temporary directory",
    )
    f.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="first HTTPS port (pbx-001 gets P, pbx-002 P+1, ...); 0 = ephemeral (default)",
    )
    f.add_argument("--control-port", type=int, default=0, help="control endpoint port; 0 = ephemeral (default)")
    f.add_argument(
        "--inventory-out",
        type=Path,
        default=None,
        help="where to write the Ansible inventory (YAML); default <state-dir>/inventory.yml",
    )
    f.add_argument(
        "--time-scale", type=float, default=1.0, help="factor applied to every wait (0.01 = 100x faster); default 1.0"
    )
    f.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for passwords, keys and machine ids (repeatable fleets); default random",
    )
    f.add_argument(
        "--company-key-on",
        default=None,
        metavar="HOSTS",
        help="on first start create one company key and apply + bind it on these hosts: comma-separated "
        "names or shell patterns, or 'all' (e.g. 'pbx-00[1-5],pbx-010')",
    )
    f.add_argument(
        "--rate-limit",
        choices=["on", "off"],
        default="on",
        help="the v3 nginx rate limiter (180/min + 20 burst, then 429 'Too many requests'); default on",
    )
    f.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="shut down when the process that started the emulator dies (the Python harness sets this, "
        "so a killed test run leaves no fleet behind)",
    )
    f.add_argument(
        "--no-fsync",
        action="store_true",
        help="skip fsync on state writes (faster, loses durability on power loss; for benchmarks)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # one line per request: buffer them (flushed every second by the fleet loop, at shutdown and
    # before any warning) instead of one write syscall per request
    root_handlers = list(logging.getLogger().handlers)
    req_logger = logging.getLogger("mikopbx_emulator.request")
    for h in root_handlers:
        req_logger.addHandler(logging.handlers.MemoryHandler(500, logging.WARNING, target=h))
    req_logger.propagate = False
    if args.command == "fleet":
        if args.count < 1:
            print("--count must be >= 1", file=sys.stderr)
            return 2
        if args.time_scale <= 0:
            print("--time-scale must be > 0", file=sys.stderr)
            return 2
        opts = FleetOptions(
            count=args.count,
            generation=args.generation,
            state_dir=args.state_dir,
            base_port=args.base_port,
            control_port=args.control_port,
            inventory_out=args.inventory_out,
            time_scale=args.time_scale,
            seed=args.seed,
            company_key_on=args.company_key_on,
            rate_limit=args.rate_limit == "on",
            fsync=not args.no_fsync,
            exit_with_parent=args.exit_with_parent,
        )
        try:
            return asyncio.run(run_fleet(opts))
        except KeyboardInterrupt:
            return 0
    return 2
