# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the optional SSH reachability probe of 2024.1 PBXs.

They reuse the probe command and the output parser of ``mikopbx_reachability`` (module_utils), so a
probe sent over SSH is the same fixed script and reads the same way as one sent through the 2026.1
API. The documentation of each filter is in the sidecar file ``<filter name>.yml``.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.mikopbx.marketplace.plugins.module_utils.reachability import (
    DEFAULT_HOSTS,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    ProbeInputError,
    build_probe_command,
    first_failure,
    parse_probe_output,
    summarise,
)


def _hosts(hosts: Any) -> list[str]:
    if hosts in (None, "", []):
        return list(DEFAULT_HOSTS)
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError("the licensing hosts must be a list of host names")
    return list(hosts)


def mikopbx_probe_command(hosts: Any = None, port: Any = DEFAULT_PORT, timeout: Any = DEFAULT_TIMEOUT) -> str:
    """The fixed probe command line for ``hosts`` (validated and shell-quoted)."""
    try:
        command, _names, _port, _timeout = build_probe_command(_hosts(hosts), port, timeout)
    except ProbeInputError as exc:
        raise AnsibleFilterError("mikopbx_probe_command: %s" % exc) from exc
    return command


def mikopbx_probe_result(output: Any, hosts: Any = None, license_ping: Any = None) -> dict[str, Any]:
    """A reachability verdict shaped like the result of mikopbx_reachability, from the probe output."""
    try:
        names = build_probe_command(_hosts(hosts))[1]
    except ProbeInputError as exc:
        raise AnsibleFilterError("mikopbx_probe_result: %s" % exc) from exc

    ping = license_ping if isinstance(license_ping, dict) else None
    results = parse_probe_output(output if isinstance(output, str) else "", names)
    reachable, msg = summarise(results, ping)
    return {
        "changed": False,
        "failed": False,
        "reachable": reachable,
        "method": "ssh_probe",
        "hosts": results,
        "license_ping": ping,
        "first_failure": first_failure(results, ping),
        "msg": msg,
    }


class FilterModule:
    """SSH probe filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "mikopbx_probe_command": mikopbx_probe_command,
            "mikopbx_probe_result": mikopbx_probe_result,
        }
