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
  - With O(api_key) this module sends at most three HTTP requests to the PBX.
  - On MikoPBX 2024.x a failed licence read carries no reason; the module then asks the PBX's base
    feature check once more to tell V(binding_required) from V(unknown).
author:
  - mikopbx.marketplace maintainers (@mikopbx-marketplace)
extends_documentation_fragment:
  - mikopbx.marketplace.connection
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads; it behaves the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  action_group:
    description: Use C(group/mikopbx.marketplace.mikopbx) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - mikopbx.marketplace.mikopbx
options:
  reveal_license_key:
    description:
      - Also return the licence key in clear text as RV(license_key).
      - "Only allowed when the task has C(no_log: true); otherwise the module fails without
        contacting the PBX."
    type: bool
    default: false
notes:
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
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mikopbx.marketplace.plugins.module_utils.common import (
    check_connection_options,
    client_from_module,
    connection_argument_spec,
    connection_module_kwargs,
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


def main() -> None:
    argument_spec = connection_argument_spec()
    argument_spec.update(reveal_license_key=dict(type="bool", default=False, no_log=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **connection_module_kwargs())

    # Connection options are checked before anything else, a password in the url included.
    check_connection_options(module)

    reveal = module.params["reveal_license_key"]
    if reveal and not module.no_log:
        module.fail_json(msg="reveal_license_key: true is only allowed on a task with no_log: true")

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

    if reveal and key:
        # The client registered the key as a no_log value; the task itself is no_log.
        module.no_log_values.discard(key)
        result["license_key"] = key

    result["msg"] = _summary(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
