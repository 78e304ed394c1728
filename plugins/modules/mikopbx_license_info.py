#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mikopbx_license_info
short_description: Read the marketplace licence facts of a MikoPBX
version_added: 1.0.0
description:
  - Reads, without changing anything, the licence state of one MikoPBX phone system through its
    REST API; API generation, MikoPBX version, the licence key (masked), the licence owner, the
    licensed products and features with expiry and trial flags, and the seat figures of the key.
  - Tells whether the PBX holds a seat of its key (RV(binding_status=ok)), has no key
    (V(unbound)), holds a key that is bound to another machine (V(binding_required), licence error
    2008, typically after a backup was restored onto new hardware) or cannot be judged because the
    PBX could not reach the licensing service (V(unknown), with RV(licence_error)).
  - Works with MikoPBX 2026.1 (REST API v3) and 2024.x (legacy API); the generation is detected
    automatically.
  - With O(api_key) this module sends at most three HTTP requests to the PBX, plus two for O(reachability)
    and one for O(modules).
  - On MikoPBX 2024.x a failed licence read carries no reason; the module then asks the PBX's base
    feature check once more to tell V(binding_required) from V(unknown).
author:
  - mikopbx.marketplace maintainers (@mikopbx-marketplace)
extends_documentation_fragment:
  - mikopbx.marketplace.connection
  - mikopbx.marketplace.attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; it behaves the same in check mode.
  diff_mode:
    support: none
options:
  reveal_license_key:
    description:
      - Also return the licence key in clear text as RV(license_key).
      - "Only allowed when the task has C(no_log: true); otherwise the module fails without
        contacting the PBX."
    type: bool
    default: false
  reachability:
    description:
      - Also check, on the PBX, that it reaches the licensing hosts, exactly as
        M(mikopbx.marketplace.mikopbx_reachability) does, and return the verdict as RV(reachability).
      - Saves a second module run per PBX on large fleets (the fleet role uses it). Omit it to skip the check.
      - The sub-options are validated before anything is sent to the PBX.
    type: dict
    suboptions:
      hosts:
        description: Licensing host names to check; see O(mikopbx.marketplace.mikopbx_reachability#module:hosts).
        type: list
        elements: str
        default: [lic.miko.ru, lic.mikopbx.com]
      port:
        description: TCP port of the licensing hosts; see O(mikopbx.marketplace.mikopbx_reachability#module:port).
        type: int
        default: 443
      probe_timeout:
        description: Seconds per host (1-20); see O(mikopbx.marketplace.mikopbx_reachability#module:probe_timeout).
        type: int
        default: 10
      license_ping:
        description:
          - Also run the PBX's licence ping; see O(mikopbx.marketplace.mikopbx_reachability#module:license_ping).
        type: bool
        default: true
  modules:
    description:
      - Also read the installed extension modules, as M(mikopbx.marketplace.mikopbx_module_check) does without
        the marketplace check and without remediation, and return them as RV(modules).
      - Omit it to skip the read.
    type: dict
    suboptions:
      required:
        description:
          - Module ids (C(uniqid)) that must be installed and enabled; problems go to C(required_problems)
            in RV(modules).
        type: list
        elements: str
        default: []
notes:
  - A failure of the O(reachability) check or of the O(modules) read does not fail the task; the section then
    holds C(failed=true), C(msg) and C(error), and the licence facts are returned as usual.
  - The licence information is read through the PBX, which asks the licensing service; the PBX caches
    a successful answer for 120 seconds, so seat figures may lag by that much.
  - On MikoPBX 2024.x the key and version are read from the admin web interface (there is no REST
    call for them), which needs O(username) and O(password).
  - On MikoPBX 2026.1 the key and version are read with a read-only SQL C(SELECT) through
    C(system:executeSqlRequest), which needs a full-permission API key or an administrator login.
  - A licence key is bound to machines inside the closed MikoPBX licence library; no API exposes
    which other machines hold seats. RV(seats) are the key's totals as reported by the licensing service.
seealso:
  - module: mikopbx.marketplace.mikopbx_license_binding
  - module: mikopbx.marketplace.mikopbx_register
  - module: mikopbx.marketplace.mikopbx_reachability
  - module: mikopbx.marketplace.mikopbx_module_check
"""

EXAMPLES = r"""
- name: Read the licence facts of every PBX
  mikopbx.marketplace.mikopbx_license_info:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    ca_path: "{{ mikopbx_ca_path }}"
  register: licence

- name: Show key, owner and seat use
  ansible.builtin.debug:
    msg: >-
      {{ inventory_hostname }}: {{ licence.license_key_masked | default('no key', true) }},
      {{ licence.binding_status }}, seats {{ licence.seats.captured }}/{{ licence.seats.count }}

- name: Legacy (2024.x) PBX with a login, self-signed certificate accepted
  mikopbx.marketplace.mikopbx_license_info:
    url: https://pbx.example.net
    username: admin
    password: "{{ vault_pbx_password }}"
    validate_certs: false
  register: licence

- name: Fail hosts whose key is bound to another machine
  ansible.builtin.assert:
    that: licence.binding_status != 'binding_required'
    fail_msg: "{{ inventory_hostname }} must be bound again (licence error 2008)"

- name: Read the clear key (hidden from the output)
  mikopbx.marketplace.mikopbx_license_info:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    reveal_license_key: true
  register: licence_clear
  no_log: true

- name: Licence facts, licensing-host reachability and installed modules in one run
  mikopbx.marketplace.mikopbx_license_info:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    reachability:
      probe_timeout: 5
    modules:
      required: [ModuleUsersUI]
  register: pbx

- name: Name the PBXs that cannot reach the licensing hosts or lack a required module
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }}: {{ pbx.reachability.msg }}; {{ pbx.modules.required_problems | length }} problems"
  when: not pbx.reachability.reachable | default(false) or pbx.modules.required_problems | default([]) | length > 0

- name: Credentials from the environment (MIKOPBX_URL, MIKOPBX_API_KEY, MIKOPBX_CA_PATH)
  mikopbx.marketplace.mikopbx_license_info:
"""

RETURN = r"""
generation:
  description: REST API generation of the PBX, V(v3) (2026.1) or V(legacy) (2024.x).
  returned: always
  type: str
  sample: v3
version:
  description: MikoPBX version (C(PBXVersion) setting).
  returned: always
  type: str
  sample: 2026.1.223
license_key_masked:
  description: The stored licence key with all but the last group masked; V(null) when none is stored.
  returned: always
  type: str
  sample: MIKO-*****-*****-*****-DDDDD
license_key:
  description: The stored licence key in clear text.
  returned: when O(reveal_license_key=true) (which requires C(no_log) on the task) and a key is stored
  type: str
  sample: MIKO-AAAAA-BBBBB-CCCCC-DDDDD
has_license_key:
  description: Whether the PBX stores a licence key.
  returned: always
  type: bool
  sample: true
binding_status:
  description:
    - V(ok) the PBX holds a seat of its key and the licensing service answered;
    - V(unbound) no key is stored;
    - V(binding_required) the key is stored but bound to another machine (licence error 2008);
    - V(unknown) the licence state could not be read, see RV(licence_error).
  returned: always
  type: str
  choices: [ok, unbound, binding_required, unknown]
  sample: ok
owner:
  description: Licence owner as registered with the licensing service; V(null) values when unknown.
  returned: always
  type: dict
  contains:
    companyname:
      description: Company name.
      type: str
      sample: Example LLC
    contact:
      description: Contact person.
      type: str
      sample: Jane Doe
    email:
      description: Contact e-mail.
      type: str
      sample: admin@example.com
    tel:
      description: Contact phone.
      type: str
      sample: "+10000000000"
products:
  description: Licensed products with their features; empty when the licence could not be read.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Product name.
      type: str
      sample: MikoPBX
    expired:
      description: Expiry date (C(YYYY-MM-DD)); V(null) when the product does not expire.
      type: str
      sample: "2026-12-31"
    trial:
      description: Whether the product is a trial.
      type: bool
      sample: false
    expired_now:
      description: Whether the product counts as expired today (a past date, or a trial without date).
      type: bool
      sample: false
    expires_in_days:
      description: Days until the expiry date (negative when past); V(null) without a date.
      type: int
      sample: 120
    features:
      description: Licensed features of the product.
      type: list
      elements: dict
      contains:
        name:
          description: Feature name.
          type: str
          sample: MikoPBX base
        count:
          description: Licences of the feature.
          type: int
          sample: 10
        counteach:
          description: Licences taken per use.
          type: int
          sample: 1
        captured:
          description: Licences in use.
          type: int
          sample: 3
        free:
          description: Licences still free (count minus captured, at least 0).
          type: int
          sample: 7
  sample:
    - name: MikoPBX
      expired: null
      trial: false
      expired_now: false
      expires_in_days: null
      features:
        - {name: MikoPBX base, count: 10, counteach: 1, captured: 3, free: 7}
seats:
  description:
    - Seat figures of the key (the C(MikoPBX base) feature, one seat per machine).
    - V(null) figures when the licence could not be read.
  returned: always
  type: dict
  contains:
    count:
      description: Seats of the key.
      type: int
      sample: 10
    captured:
      description: Seats in use.
      type: int
      sample: 3
    free:
      description: Free seats.
      type: int
      sample: 7
    host_limit:
      description: Most hosts one key serves.
      type: int
      sample: 10
expiry:
  description: The product that expires first (by date), or V(null) when no product has a date.
  returned: always
  type: dict
  sample: {name: Module Example, expired: "2026-12-31", expires_in_days: 120, expired_now: false}
licence_error:
  description: The licence problem that decided RV(binding_status) V(binding_required) or V(unknown).
  returned: always
  type: dict
  contains:
    code:
      description: Licence-library error code (e.g. V(2008)); V(null) for connectivity problems.
      type: int
    classification:
      description: Error class, e.g. V(licence:2008), V(unreachable), V(timeout).
      type: str
    message:
      description: What happened (masked).
      type: str
    pbx_message:
      description: The PBX's own words (masked).
      type: str
    status:
      description: HTTP status of the PBX's answer.
      type: int
    hint:
      description: The fix.
      type: str
  sample: null
reachability:
  description:
    - The PBX's reachability of the licensing hosts, with the fields of
      M(mikopbx.marketplace.mikopbx_reachability)'s result (C(reachable), C(method), C(hosts), C(license_ping),
      C(first_failure), C(probe_command), C(msg)).
    - When the check itself failed, C(failed=true) with C(msg) and C(error) instead.
  returned: when O(reachability) is given and the licence facts were read
  type: dict
  sample:
    reachable: false
    method: pbx_probe
    first_failure: {host: lic.mikopbx.com, stage: tcp, detail: "TCP connection timed out (curl exit 28)"}
modules:
  description:
    - The installed modules, with the fields of M(mikopbx.marketplace.mikopbx_module_check)'s result
      (C(modules), C(summary), C(licence_problems), C(required_problems)); C(marketplace) says it was not checked
      and C(remediation) is empty.
    - When the read failed, C(failed=true) with C(msg) and C(error) instead.
  returned: when O(modules) is given and the licence facts were read
  type: dict
  sample:
    summary: {total: 3, enabled: 2, disabled: 1, licence_problems: 1, disabled_by_licence: 1}
    licence_problems: [{uniqid: ModuleCTIClient, name: CTI client}]
    required_problems: []
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mikopbx.marketplace.plugins.module_utils import modules_state as ms
from ansible_collections.mikopbx.marketplace.plugins.module_utils import reachability as rc
from ansible_collections.mikopbx.marketplace.plugins.module_utils.common import (
    check_connection_options,
    client_from_module,
    connection_argument_spec,
    connection_module_kwargs,
    error_result,
    fail_from_error,
)
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError
from ansible_collections.mikopbx.marketplace.plugins.module_utils.licence import (
    is_valid_license_key,
    mask_license_key,
    normalize_license_key,
    read_license_info,
    seat_figures,
)

# Errors of the licence read that are the PBX's or the controller's problem, not the licence state's.
_FATAL = ("auth", "tls", "rate_limited", "invalid_input", "unsupported", "not_found")


def _earliest_expiry(products: list[dict[str, Any]]) -> dict[str, Any] | None:
    dated = [p for p in products if p.get("expires_in_days") is not None]
    if not dated:
        return None
    first = min(dated, key=lambda p: p["expires_in_days"])
    return {k: first.get(k) for k in ("name", "expired", "expires_in_days", "expired_now")}


def _licence_error(err: MikoPBXError) -> dict[str, Any]:
    return {
        "code": err.licence_code,
        "classification": err.classification,
        "message": err.message,
        "pbx_message": err.pbx_message,
        "status": err.status,
        "hint": err.hint,
    }


def _summary(result: dict[str, Any]) -> str:
    key = result["license_key_masked"]
    status = result["binding_status"]
    if status == "unbound":
        return "the PBX has no licence key"
    if status == "binding_required":
        return "licence key %s is stored but bound to another machine (licence error 2008)" % key
    if status == "unknown":
        cause = (result["licence_error"] or {}).get("message") or "no answer"
        return "licence key %s is stored; its licence state could not be read (%s)" % (key, cause)
    seats = result["seats"]
    if seats.get("count") is not None:
        return "licence key %s is bound to this PBX; %s of %s seats in use" % (key, seats["captured"], seats["count"])
    return "licence key %s is bound to this PBX" % key


def _reachability(module: Any, client: Any, probe: tuple[str, list[str], int, int]) -> dict[str, Any]:
    command, hosts, _port, timeout = probe
    ping = module.params["reachability"]["license_ping"]
    try:
        result = rc.ReachabilityCheck(client, command, hosts, timeout, ping, module.warn).run()
    except MikoPBXError as err:
        return dict(
            error_result(module, err, "check the PBX's reachability of the licensing servers", client), failed=True
        )
    result.pop("changed", None)
    result.pop("generation", None)
    return result


def _modules(module: Any, client: Any) -> dict[str, Any]:
    try:
        modules = ms.read_modules(client, module.warn)
    except MikoPBXError as err:
        return dict(error_result(module, err, "read the installed modules", client), failed=True)
    not_checked = {
        "status": "skipped",
        "message": "not checked (read by mikopbx_license_info)",
        "modules_available": None,
    }
    return {
        "modules": modules,
        "summary": ms.summarise(modules),
        "licence_problems": ms.licence_problems(modules),
        "required_problems": ms.required_problems(modules, module.params["modules"]["required"]),
        "marketplace": not_checked,
        "remediation": [],
    }


def argument_spec() -> dict[str, Any]:
    spec = connection_argument_spec()
    spec.update(
        reveal_license_key=dict(type="bool", default=False, no_log=False),
        reachability=dict(
            type="dict",
            options=dict(
                hosts=dict(type="list", elements="str", default=list(rc.DEFAULT_HOSTS)),
                port=dict(type="int", default=rc.DEFAULT_PORT),
                probe_timeout=dict(type="int", default=rc.DEFAULT_TIMEOUT),
                license_ping=dict(type="bool", default=True),
            ),
        ),
        modules=dict(type="dict", options=dict(required=dict(type="list", elements="str", default=[]))),
    )
    return spec


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **connection_module_kwargs())

    # Connection options are checked before anything else, a password in the url included.
    check_connection_options(module)

    reveal = module.params["reveal_license_key"]
    if reveal and not module.no_log:
        module.fail_json(msg="reveal_license_key: true is only allowed on a task with no_log: true")

    probe = None
    if module.params["reachability"] is not None:
        wanted = module.params["reachability"]
        try:
            probe = rc.build_probe_command(wanted["hosts"], wanted["port"], wanted["probe_timeout"])
        except rc.ProbeInputError as exc:
            module.fail_json(msg="reachability: %s (nothing was sent to the PBX)" % exc, changed=False)

    client = client_from_module(module)
    try:
        settings = client.settings()
        generation = client.generation
    except MikoPBXError as err:
        fail_from_error(module, err, "read the PBX settings", client)

    key = normalize_license_key(settings.get("PBXLicense"))
    result: dict[str, Any] = dict(
        changed=False,
        generation=generation,
        version=settings.get("PBXVersion"),
        license_key_masked=mask_license_key(key),
        has_license_key=bool(key),
        binding_status="unbound",
        owner={"companyname": None, "contact": None, "email": None, "tel": None},
        products=[],
        seats=seat_figures([]),
        expiry=None,
        licence_error=None,
    )

    if key and not is_valid_license_key(key):
        # The PBX refuses to look up a malformed key (lic_WrongLicenseKeyOrEmpty); say so instead.
        result["binding_status"] = "unknown"
        result["licence_error"] = {
            "code": None,
            "classification": "invalid_input",
            "message": "the PBX stores a malformed licence key",
            "pbx_message": None,
            "status": None,
            "hint": "apply the company key with mikopbx.marketplace.mikopbx_license_binding or mikopbx_register",
        }
    elif key:
        try:
            info = read_license_info(client, legacy_feature_check=True)
        except MikoPBXError as err:
            fatal = err.classification in _FATAL or (
                err.status is None and err.classification in ("unreachable", "timeout")
            )
            if fatal:
                fail_from_error(module, err, "read the licence information", client)
            result["binding_status"] = "binding_required" if err.licence_code == 2008 else "unknown"
            result["licence_error"] = _licence_error(err)
        else:
            result["binding_status"] = "ok"
            result["owner"] = info["owner"]
            result["products"] = info["products"]
            result["seats"] = seat_figures(info["products"])
            result["expiry"] = _earliest_expiry(info["products"])

    if probe is not None:
        result["reachability"] = _reachability(module, client, probe)
    if module.params["modules"] is not None:
        result["modules"] = _modules(module, client)

    if reveal and key:
        # The client registered the key as a no_log value; the task itself is no_log.
        module.no_log_values.discard(key)
        result["license_key"] = key

    result["msg"] = _summary(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
