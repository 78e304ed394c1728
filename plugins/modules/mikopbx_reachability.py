#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mikopbx_reachability
short_description: Check on the MikoPBX itself that it reaches the licensing servers, stage by stage
version_added: 0.1.0
description:
  - Proves that a MikoPBX B(itself) can reach the licensing servers, and when it cannot, names the host and the
    first stage that fails, V(dns), V(tcp) (port 443), V(tls) (certificate verified; a certificate the PBX does
    not trust is flagged as possible TLS interception) or V(http).
  - The check runs on the PBX, never on the Ansible controller. A controller that reaches the internet proves
    nothing about the PBX's DNS, routes, firewall or proxy.
  - On MikoPBX 2026.1 one fixed, read-only probe command is run through C(system:executeBashCommand). Its
    script is a constant; the host names, port and timeout are validated here and passed to it as quoted
    arguments. It runs C(curl) once per host, all hosts at the same time.
  - Also asks the PBX's own licence library for its verdict (C(license:ping)) unless O(license_ping=false).
  - On MikoPBX 2024.1, which has no command endpoint, and on 2026.1 when the API key may not run commands, only
    C(license:ping) is available; RV(method) is then V(license_ping_only) and RV(hosts) is empty.
author:
  - mikopbx.marketplace maintainers (@mikopbx-marketplace)
extends_documentation_fragment:
  - mikopbx.marketplace.connection
  - mikopbx.marketplace.attributes
attributes:
  check_mode:
    support: full
    details:
      - The module only reads; it runs the same way in check mode.
  diff_mode:
    support: none
options:
  hosts:
    description:
      - Licensing host names the PBX must reach.
      - Only DNS names are accepted (letters, digits, hyphens and dots); anything else, for example a URL or a
        name with a port, fails before any request is sent. At most 10 hosts.
    type: list
    elements: str
    default: [lic.miko.ru, lic.mikopbx.com]
  port:
    description: TCP port of the HTTPS service on the licensing hosts.
    type: int
    default: 443
  probe_timeout:
    description:
      - Seconds the PBX waits for each host to resolve, connect and complete the TLS handshake; the HTTP answer
        may take 5 seconds more. Between 1 and 20, because MikoPBX gives up on an API request after 30 seconds.
      - This is not the connection option O(timeout), which limits how long the controller waits for the PBX.
    type: int
    default: 10
  license_ping:
    description:
      - Also run the PBX's licence library ping (C(license:ping)) and report it in RV(license_ping).
      - The PBX tries three times with three-second pauses, so this can take about ten seconds when the
        licensing server does not answer.
      - Always done when the per-host probe is not available (RV(method=license_ping_only)).
    type: bool
    default: true
  fail_on_unreachable:
    description:
      - Fail the task when RV(reachable) is V(false).
      - By default the findings are only reported, so that one site with a closed firewall does not stop a
        fleet run; the role's summary decides.
    type: bool
    default: false
notes:
  - Requires the Python library C(requests) on the controller; the PBX needs C(curl) and a POSIX shell, which
    MikoPBX ships.
  - The per-host probe needs MikoPBX 2026.1 and a login or an API key with full permissions
    (C(system:executeBashCommand)). With a restricted key the PBX refuses it; the module then warns and falls
    back to RV(method=license_ping_only).
  - MikoPBX 2024.1 has no command endpoint, so only C(license:ping) is available and RV(hosts) is empty. For the
    per-host stages on 2024.1, run RV(probe_command) on the PBX over SSH (for example with M(ansible.builtin.raw));
    the fleet role does this when SSH access is configured.
  - On MikoPBX 2024.1 the API worker waits only 10 seconds, so a licence ping that gets no answer may be
    reported as the worker giving up; it is still a failed ping.
  - V(lic.miko.ru) is part of the default host list, but MikoPBX releases up to 2026.1 contact V(lic.mikopbx.com);
    drop V(lic.miko.ru) from O(hosts) if your network only opens the names MikoPBX uses.
  - A V(tls) failure with RV(hosts[].intercepted=true) means the PBX does not trust the certificate it was
    shown, because of a TLS-inspecting proxy or firewall between the PBX and the internet, or because the PBX's
    CA bundle is outdated.
seealso:
  - module: mikopbx.marketplace.mikopbx_module_check
  - module: mikopbx.marketplace.mikopbx_license_info
"""

EXAMPLES = r"""
- name: Can this PBX reach the licensing servers?
  mikopbx.marketplace.mikopbx_reachability:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    ca_path: "{{ mikopbx_ca_path }}"
  register: reach

- name: Name the failing stage
  ansible.builtin.debug:
    msg: "{{ reach.first_failure.host }}: {{ reach.first_failure.stage }} ({{ reach.first_failure.detail }})"
  when: not reach.reachable

- name: Stop this host before registration when the PBX cannot reach the licensing server
  mikopbx.marketplace.mikopbx_reachability:
    url: "{{ mikopbx_url }}"
    username: admin
    password: "{{ mikopbx_password }}"
    validate_certs: false
    hosts:
      - lic.mikopbx.com
    probe_timeout: 5
    fail_on_unreachable: true
"""

RETURN = r"""
reachable:
  description:
    - True when every host in RV(hosts) passed every stage and the licence ping (when run) succeeded.
    - With RV(method=license_ping_only), the licence ping's verdict.
  returned: success
  type: bool
  sample: false
method:
  description:
    - V(pbx_probe) the per-host probe ran on the PBX; V(license_ping_only) only the PBX's licence ping was
      available (MikoPBX 2024.1, or a key that may not run commands).
  returned: success
  type: str
  sample: pbx_probe
hosts:
  description: One entry per host, in the order of O(hosts); empty with RV(method=license_ping_only).
  returned: success
  type: list
  elements: dict
  contains:
    host:
      description: The host name.
      type: str
      sample: lic.mikopbx.com
    ok:
      description: Whether the PBX reached the host over HTTPS.
      type: bool
      sample: false
    failed_stage:
      description:
        - The first stage that failed, V(dns), V(tcp), V(tls) or V(http); V(null) when the host was reached.
        - V(probe) when the probe could not check the host at all (for example no C(curl) on the PBX).
      type: str
      sample: tls
    detail:
      description: What happened, with curl's own error text.
      type: str
      sample: "certificate not trusted: TLS interception or unverified chain (curl exit 60): SSL certificate problem"
    intercepted:
      description: True when the PBX did not trust the certificate presented (TLS interception or unverified chain).
      type: bool
      sample: true
    curl_exit:
      description: curl's exit code on the PBX.
      type: int
      sample: 60
    http_status:
      description: The HTTP status the host answered, C(000) when there was no HTTP answer.
      type: str
      sample: "000"
license_ping:
  description:
    - The PBX licence library's own verdict (C(license:ping)); V(null) when O(license_ping=false) and the probe
      ran.
  returned: success
  type: dict
  sample:
    ok: false
    detail: "the licence ping failed (the PBX tries three times)"
first_failure:
  description:
    - The first failed host and stage, else a failed licence ping (C(stage=license_ping), C(host=null)), else
      V(null).
  returned: success
  type: dict
  sample:
    host: lic.mikopbx.com
    stage: tcp
    detail: "TCP connection timed out (no route, or packets dropped by a firewall) (curl exit 28)"
probe_command:
  description:
    - The exact probe command for the requested hosts (the same on every PBX), for running it on a MikoPBX 2024.1
      over SSH. It contains no secret.
  returned: success
  type: str
  sample: "sh -c '...' mikopbx-probe-v1 443 10 lic.miko.ru lic.mikopbx.com"
generation:
  description: The API generation of the PBX, V(v3) (2026.1) or V(legacy) (2024.1).
  returned: success
  type: str
  sample: v3
msg:
  description: One sentence with the verdict.
  returned: always
  type: str
  sample: "the PBX cannot reach every licensing host (lic.mikopbx.com: tcp stage failed)"
error:
  description: Details of a failure to talk to the PBX (masked), with the classification and the fix.
  returned: when the PBX could not be asked
  type: dict
  sample:
    classification: auth
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mikopbx.marketplace.plugins.module_utils import common
from ansible_collections.mikopbx.marketplace.plugins.module_utils import reachability as rc
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError


def argument_spec() -> dict[str, Any]:
    spec = common.connection_argument_spec()
    spec.update(
        hosts=dict(type="list", elements="str", default=list(rc.DEFAULT_HOSTS)),
        port=dict(type="int", default=rc.DEFAULT_PORT),
        probe_timeout=dict(type="int", default=rc.DEFAULT_TIMEOUT),
        license_ping=dict(type="bool", default=True),
        fail_on_unreachable=dict(type="bool", default=False),
    )
    return spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        **common.connection_module_kwargs(),
    )
    common.check_connection_options(module)

    # Host names, port and timeout are validated before anything is sent to the PBX.
    try:
        command, hosts, _port, timeout = rc.build_probe_command(
            module.params["hosts"], module.params["port"], module.params["probe_timeout"]
        )
    except rc.ProbeInputError as exc:
        module.fail_json(msg="%s (nothing was sent to the PBX)" % exc, changed=False)

    client = common.client_from_module(module)
    check = rc.ReachabilityCheck(client, command, hosts, timeout, module.params["license_ping"], module.warn)
    try:
        result = check.run()
    except MikoPBXError as err:
        common.fail_from_error(module, err, "check the PBX's reachability of the licensing servers", client=client)

    if module.params["fail_on_unreachable"] and not result["reachable"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
