#!/usr/bin/env bash
# Place the offline pip bootstrap stand-in where the ansible-test of each given venv looks for it.
# Usage: .ci/install_pip_standin.sh VENV_PYTHON...
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_dir="${HOME}/.ansible/test/cache"
mkdir -p "${cache_dir}"

for python in "$@"; do
    # Ask ansible-test itself which pip version it bootstraps for this interpreter.
    pip_version="$("${python}" - <<'PY'
import re
import sys
import types

try:
    from ansible_test._internal.python_requirements import get_venv_packages

    version = "%d.%d" % sys.version_info[:2]
    print(get_venv_packages(types.SimpleNamespace(version=version))["pip"])
except Exception:  # a private API: fall back to reading the default from its source
    import ansible_test

    source = open(ansible_test.__path__[0] + "/_internal/python_requirements.py").read()
    print(re.search(r"pip='([0-9.]+)'", source).group(1))
PY
)"
    target="${cache_dir}/get_pip_${pip_version//./_}.py"

    if [[ -f "${target}" ]] && ! grep -q mikopbx-get-pip-standin "${target}"; then
        echo "pip bootstrap: keeping existing ${target} (not ours)"
        continue
    fi
    cp "${here}/get_pip_standin.py" "${target}"
    echo "pip bootstrap: stand-in for pip ${pip_version} at ${target}"
done
