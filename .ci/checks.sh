#!/usr/bin/env bash
# Run make targets as independent checks, keep going past failures, and print one summary.
#
# Usage: .ci/checks.sh MAKE STATUS_DIR [--background "TARGET..."] TARGET...
#
# The --background targets run one after the other in the background while the others run in
# the foreground, one after the other; the output of the background targets is printed after
# the foreground ones, so the two never interleave. A target that skips itself (because what it
# would test does not exist yet) says so by creating STATUS_DIR/<target>.skipped.
#
# In CI (CI set), CHECK_TIMEOUT (default 40m, any `timeout` duration) bounds each check, so that a
# hung check is reported in the summary instead of running into CI's own time limit. It is not
# used at a terminal: `timeout` moves the check out of the terminal's process group, which would
# keep Ctrl-C from reaching it.
set -uo pipefail

check_timeout="${CHECK_TIMEOUT:-40m}"
limit=()
[[ -n "${CI:-}" ]] && limit=(timeout --kill-after=30s "${check_timeout}")

read -r -a make_cmd <<<"$1"
status_dir="$2"
shift 2

background=()
if [[ "${1:-}" == "--background" ]]; then
    read -r -a background <<<"$2"
    shift 2
fi
foreground=("$@")

rm -rf "${status_dir}"
mkdir -p "${status_dir}"

# CPU seconds (user + system) used so far by the finished children of this shell. `times` must
# run in this shell itself (a command substitution would be a fresh process with no children).
children_cpu() {
    times >"${status_dir}/.times"
    awk 'NR == 2 {
        total = 0
        for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); total += t[1] * 60 + t[2] }
        printf "%d\n", total
    }' "${status_dir}/.times"
}

# run_check TARGET: runs one target and records passed/failed/skipped, wall and CPU seconds.
run_check() {
    local target="$1" started cpu_before cpu_after
    started=$(date +%s)
    children_cpu >"${status_dir}/.cpu_before"
    read -r cpu_before <"${status_dir}/.cpu_before"
    local rc=0
    "${limit[@]}" "${make_cmd[@]}" --no-print-directory "${target}" || rc=$?
    if ((rc == 0)); then
        [[ -e "${status_dir}/${target}.skipped" ]] || touch "${status_dir}/${target}.passed"
    elif ((${#limit[@]} && (rc == 124 || rc == 137))); then
        echo "${target}: stopped after ${check_timeout} (CHECK_TIMEOUT)" >&2
        echo "timed out after ${check_timeout}" >"${status_dir}/${target}.failed"
    else
        touch "${status_dir}/${target}.failed"
    fi
    children_cpu >"${status_dir}/.cpu_after"
    read -r cpu_after <"${status_dir}/.cpu_after"
    echo "$(($(date +%s) - started)) $((cpu_after - cpu_before))" >"${status_dir}/${target}.seconds"
}

background_pid=""
if ((${#background[@]})); then
    (
        for target in "${background[@]}"; do
            run_check "${target}" >"${status_dir}/${target}.log" 2>&1
        done
    ) &
    background_pid=$!
fi

for target in "${foreground[@]}"; do
    run_check "${target}"
done

if [[ -n "${background_pid}" ]]; then
    wait "${background_pid}"
    for target in "${background[@]}"; do
        printf '\n\033[1m==> %s (ran in the background; output follows)\033[0m\n' "${target}"
        cat "${status_dir}/${target}.log"
    done
fi

passed=0 failed=0 skipped=0
printf '\n\033[1m==> summary\033[0m (wall and CPU seconds per check)\n'
for target in "${foreground[@]}" "${background[@]}"; do
    read -r wall cpu <"${status_dir}/${target}.seconds" || wall="?" cpu="?"
    if [[ -e "${status_dir}/${target}.failed" ]]; then
        reason=$(cat "${status_dir}/${target}.failed")
        result="FAILED${reason:+ (${reason})}" failed=$((failed + 1))
    elif [[ -e "${status_dir}/${target}.skipped" ]]; then
        result="skipped: $(cat "${status_dir}/${target}.skipped")" skipped=$((skipped + 1))
    else
        result="passed" passed=$((passed + 1))
    fi
    printf '  %-16s %6ss %6ss cpu  %s\n' "${target}" "${wall}" "${cpu}" "${result}"
done

echo "checks: ${passed} passed, ${failed} failed, ${skipped} skipped"
((failed == 0))
