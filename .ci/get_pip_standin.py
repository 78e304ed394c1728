"""Offline stand-in for the pip bootstrap script that ansible-test downloads.

ansible-test creates empty virtual environments for its sanity tests and bootstraps pip into them
by running ``~/.ansible/test/cache/get_pip_<version>.py`` with the wanted packages as arguments
(for example ``pip==24.2 --no-setuptools --no-wheel``). When that file is missing it downloads it
from a host this network cannot reach. This stand-in is copied there by ``make sanity`` instead:
it installs pip from the interpreter's bundled wheel (ensurepip), then lets that pip install the
requested packages from the package index, trusting the system CA bundle.

Marker used by the Makefile to recognise (and refresh) its own copies: mikopbx-get-pip-standin
"""

from __future__ import annotations

import os
import subprocess
import sys

SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)

# get-pip.py options that have no meaning for `pip install`.
GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}


def pip_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GET_PIP", None)

    ca_bundle = env.get("SSL_CERT_FILE") or next((p for p in SYSTEM_CA_BUNDLES if os.path.isfile(p)), "")
    if ca_bundle:
        env["SSL_CERT_FILE"] = ca_bundle
        env["PIP_CERT"] = ca_bundle

    return env


def main() -> int:
    env = pip_environment()
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], env=env)

    install_args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    if any(not arg.startswith("-") for arg in install_args):
        subprocess.check_call([sys.executable, "-m", "pip", "install", *install_args], env=env)

    return 0


if __name__ == "__main__":
    sys.exit(main())
