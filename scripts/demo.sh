#!/usr/bin/env bash
# make demo: the fleet role against an emulated MikoPBX fleet, end to end, in about a minute.
#
# Fleet (5 PBXs, both API generations, state kept in demo-output/ between runs):
#   pbx-001 v3      already holds the company key (bound)
#   pbx-002 legacy  fresh
#   pbx-003 v3      restored from a backup of pbx-001 onto new hardware: stores the key, holds no seat
#   pbx-004 legacy  fresh; one module switched off for lack of a licence, one by the user
#   pbx-005 v3      its firewall blocks the licensing hosts (the PBX-side probe names the failing stage)
# playbooks/register_fleet.yml runs twice; the second pass must report changed=0 everywhere and
# send no write request. A second `make demo` reuses the same fleet and changes nothing at all.
# Needs `make venv` (the emulator and ansible-core live in .venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VBIN="$ROOT/.venv/bin"
OUT="$ROOT/demo-output"
STATE="$OUT/emulator-state"
INVENTORY="$OUT/inventory.yml"
REPORT_DIR="$OUT/report"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.collections"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export ANSIBLE_NOCOLOR="${ANSIBLE_NOCOLOR:-1}"
export PYTHONDONTWRITEBYTECODE=1

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
started=$(date +%s)

[ -x "$VBIN/ansible-playbook" ] && [ -x "$VBIN/mikopbx-emulator" ] || {
  echo "demo: run 'make venv' first (.venv with ansible-core and the emulator is missing)" >&2
  exit 1
}
mkdir -p "$OUT" "$REPORT_DIR"
first_run=true
[ -f "$STATE/.demo-prepared" ] && first_run=false

# --- 1. the emulated fleet ---------------------------------------------------------------------
bold "1. Starting an emulated fleet of 5 MikoPBXs (state: ${STATE#"$ROOT"/})"
rm -f "$INVENTORY"
setsid "$VBIN/mikopbx-emulator" fleet --count 5 --generation mixed --state-dir "$STATE" \
  --inventory-out "$INVENTORY" --time-scale 0.02 --seed 2026 --company-key-on pbx-001 \
  >"$OUT/emulator.log" 2>&1 </dev/null &
EMULATOR_PID=$!
stop_emulator() {
  if kill -0 "$EMULATOR_PID" 2>/dev/null; then
    kill -TERM "$EMULATOR_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$EMULATOR_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$EMULATOR_PID" 2>/dev/null || true
  fi
}
trap stop_emulator EXIT INT TERM

for _ in $(seq 300); do
  [ -s "$INVENTORY" ] && break
  kill -0 "$EMULATOR_PID" 2>/dev/null || { echo "demo: the emulator stopped; see $OUT/emulator.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$INVENTORY" ] || { echo "demo: the emulator did not become ready; see $OUT/emulator.log" >&2; exit 1; }

# Control API calls (the emulator's test interface; the playbook never uses it).
control() {
  "$VBIN/python" - "$INVENTORY" "$STATE" "$first_run" "$@" <<'PY'
import json
import sys

import yaml
from mikopbx_emulator.harness import ControlClient

inventory, state_dir, first_run, action = sys.argv[1], sys.argv[2], sys.argv[3] == "true", sys.argv[4]
inv = yaml.safe_load(open(inventory))
control = ControlClient(inv["all"]["vars"]["mikopbx_emulator_control_url"])

if action == "prepare":
    if first_run:
        # A backup of pbx-001 restored onto pbx-003, which is new hardware (a new machine identity).
        snapshot = control.snapshot("pbx-001")
        control.restore("pbx-003", snapshot, new_machine=True)
        rows = control.state("pbx-004")["modules"]
        extra = [
            {"uniqid": "ModuleCallTracking", "name": "Call tracking", "version": "1.4.0", "disabled": "1",
             "disableReason": "DisabledByLicense", "disableReasonText": "License expired (2011)",
             "lic_feature_id": "120", "lic_product_id": "42"},
            {"uniqid": "ModuleTelegramNotify", "name": "Telegram notify", "version": "2.0.1", "disabled": "1",
             "disableReason": "DisabledByUser", "disableReasonText": "", "lic_feature_id": "0",
             "lic_product_id": "0"},
        ]
        control.set_modules("pbx-004", rows + extra)
        open(state_dir + "/.demo-prepared", "w").write("prepared\n")
    # Faults are not part of the saved state: block pbx-005's licensing hosts on every start.
    control.clear_faults("pbx-005")
    control.add_fault("egress_blocked", pbx="pbx-005")
    for item in control.fleet():
        print("  %-8s %-7s %s" % (item["name"], item["generation"], item["url"]))
elif action == "snapshot":
    print(json.dumps(control.requests_summary()))
elif action == "writes":
    before = json.loads(open(sys.argv[5]).read())
    after = control.requests_summary()
    for name in sorted(after):
        b = before.get(name, {})
        delta = {k: after[name].get(k, 0) - b.get(k, 0) for k in ("read", "write", "auth", "total")}
        print("  %-8s requests %3d (reads %3d, writes %d, logins %d)" % (
            name, delta["total"], delta["read"], delta["write"], delta["auth"]))
PY
}

control prepare
$first_run || echo "  (same fleet as the previous demo run: keys, seats and modules were kept)"

# --- 2. the playbook, twice --------------------------------------------------------------------
# One PBX is blocked on purpose and one module is switched off for lack of a licence, so the demo
# allows exactly one of each instead of failing the run (the defaults allow none).
EXTRA=(-e "mikopbx_report_dir=$REPORT_DIR" -e "mikopbx_report_print=false"
       -e '{"mikopbx_fail_on": {"unreachable": 1, "unbound": 1, "licence_disabled_modules": 1}}'
       -e '{"mikopbx_company": {"name": "Demo LLC", "email": "it@demo.example", "contact_name": "Demo Admin"}}')

# What the pass did per PBX, from the JSON report (keys are masked there).
summarise() {
  "$VBIN/python" - "$1" <<'PY'
import json
import sys
import textwrap

report = json.load(open(sys.argv[1]))
for h in report["hosts"]:
    b, notes = h["binding"], []
    if h["registration"]["action"] != "none":
        notes.append(h["registration"]["action"])
    if b["changed"] or b["before"] != b["status"]:
        notes.append("binding %s -> %s" % (b["before"], b["status"]))
    if h["skipped"]:
        # The reason's first clause; the whole text is in the report.
        reason = textwrap.shorten(h["skipped"].split(": ", 1)[0], 90, placeholder=" ...")
        notes.append("left out: %s (details in the report)" % reason)
    print("  %-8s %-7s %s" % (h["name"], "CHANGED" if h["changed"] else "ok", "; ".join(notes) or "nothing to do"))
PY
}

run_pass() {
  local pass=$1 log="$OUT/run-$1.log" rc=0 t0
  t0=$(date +%s)
  "$VBIN/ansible-playbook" -i "$INVENTORY" playbooks/register_fleet.yml "${EXTRA[@]}" >"$log" 2>&1 || rc=$?
  echo "  ansible-playbook exit code $rc in $(( $(date +%s) - t0 )) s (full log: ${log#"$ROOT"/})"
  if [ -f "$REPORT_DIR/mikopbx-fleet-report.json" ]; then
    cp "$REPORT_DIR/mikopbx-fleet-report.json" "$OUT/report-pass-$pass.json"
    summarise "$OUT/report-pass-$pass.json"
  fi
  sed -n '/^PLAY RECAP/,$p' "$log" | sed 's/^/  /'
  return $rc
}

control snapshot >"$OUT/.requests-before-1.json"
bold "2. First pass: playbooks/register_fleet.yml"
run_pass 1 || { echo "demo: the first pass failed; see $OUT/run-1.log" >&2; exit 1; }

control snapshot >"$OUT/.requests-before-2.json"
bold "3. Second pass on the same fleet (must change nothing)"
run_pass 2 || { echo "demo: the second pass failed; see $OUT/run-2.log" >&2; exit 1; }
bold "   HTTP requests of the second pass per PBX (from the emulator's request log)"
control writes "$OUT/.requests-before-2.json"

changed_total=$(sed -n '/^PLAY RECAP/,$p' "$OUT/run-2.log" | grep -o 'changed=[0-9]*' | cut -d= -f2 | awk "{s+=\$1} END {print s+0}")
if [ "$changed_total" = "0" ]; then
  echo "  OK: second pass reports changed=0 on every PBX"
else
  echo "  UNEXPECTED: second pass reports $changed_total changes" >&2
  exit 1
fi

# --- 3. the report -----------------------------------------------------------------------------
bold "4. Fleet report (${REPORT_DIR#"$ROOT"/}/mikopbx-fleet-report.md)"
sed 's/^/  /' "$REPORT_DIR/mikopbx-fleet-report.md"

bold "Files"
echo "  report (people):   ${REPORT_DIR#"$ROOT"/}/mikopbx-fleet-report.md"
echo "  report (machines): ${REPORT_DIR#"$ROOT"/}/mikopbx-fleet-report.json"
echo "  playbook logs:     demo-output/run-1.log, demo-output/run-2.log"
echo "  emulated fleet:    demo-output/inventory.yml, demo-output/emulator-state/ (kept for the next run;"
echo "                     delete demo-output/ to start from a fresh fleet)"
echo
echo "demo finished in $(( $(date +%s) - started )) s"
