#!/usr/bin/env bash
# Run `ansible-test sanity` with one ansible-core venv on the staged copy of the collection.
# Usage: .ci/sanity.sh VENV_BIN PYTHON_VERSION COLLECTION_COPY FINDINGS_FILE
#
# The full output is kept in build/sanity-<python>.log; on failure the ERROR lines (and the
# output of failed commands) go to FINDINGS_FILE, under a header naming the run that found them.
set -euo pipefail

venv_bin="$1"
python_version="$2"
collection_copy="$3"
findings="$4"

log="$(dirname "${findings}")/sanity-${python_version}.log"
core_version="$("${venv_bin}/python" -c 'import ansible; print(ansible.__version__)')"
mkdir -p "$(dirname "${findings}")"

export PATH="${venv_bin}:${PATH}"

# The console gets the test results without the progress of pip inside ansible-test's venvs
# (ansible-test passes pip no quiet option); the log keeps everything.
pip_progress='^(Looking in |Collecting |Processing |Requirement already |Installing collected |Successfully |'
pip_progress+='Attempting uninstall|Found existing installation|Uninstalling |Using cached |WARNING: Location )'
pip_progress+='|^ +(Downloading|Using cached|Successfully uninstalled|━)|^$'

rc=0
(
    cd "${collection_copy}"
    ansible-test sanity --local --requirements --python "${python_version}" --color no
) 2>&1 | tee "${log}" | { grep -Ev "${pip_progress}" || true; } || rc=$?

# Findings of this run replace those of the previous run for the same Python version; the
# findings file is the union of the versions that currently fail.
own_findings="${findings%.txt}-${python_version}.txt"
rm -f "${own_findings}"
if [[ "${rc}" -ne 0 ]]; then
    {
        echo "## ansible-test sanity, ansible-core ${core_version}, Python ${python_version}, $(date -u +%FT%TZ)"
        # ERROR/FATAL lines, plus the output of a failed command that ansible-test quotes after them.
        awk '/^(ERROR|FATAL):/ { print; quoting = 0; next }
             /^>>> / { quoting = 1; print; next }
             /^Running sanity test/ { quoting = 0 }
             quoting { print }' "${log}"
        echo
    } >"${own_findings}"
    echo "sanity (ansible-core ${core_version}, Python ${python_version}) failed; findings in ${findings}" >&2
fi
shopt -s nullglob
parts=("${findings%.txt}"-*.txt)
if ((${#parts[@]})); then
    {
        echo "# ansible-test sanity findings, written by \`make sanity\` (refreshed on every run)."
        echo "# Frequent ones: pylint disallowed-name \"_\": ansible-test's pylint bans \`_\` as a name, use"
        echo "# e.g. \`_unused\`; shebang: use \`#!/usr/bin/env python\` (not python3) or \`#!/usr/bin/env bash\`."
        echo
        cat "${parts[@]}"
    } >"${findings}"
else
    rm -f "${findings}"
fi
exit "${rc}"
