#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mikopbx_license_binding
short_description: Bind, release or verify the binding of a MikoPBX to a company licence key
version_added: 0.1.0
description:
  - Manages the binding of one MikoPBX to the company licence key, that is the stored key plus a seat of that
    key held by the PBX's machine. A key has a number of seats (10 by default) and serves at most 10 hosts.
  - O(state=absent) releases the binding before a migration with C(license:resetKey). The key is removed from the
    PBX and the machine's seat is freed, so the key can be bound on the new machine. The masked key that was
    released is returned in RV(released_key_masked). When the licensing service does not answer the PBX, the
    release is refused before any write (the reset would clear the key and keep the seat), unless
    O(force_release=true).
  - O(state=present) ensures that the PBX holds O(license_key) and a seat of it. The key is applied when needed,
    then the binding is confirmed with live licence information. When all seats are taken the module fails
    before any change and returns the manual step in the vendor's licence cabinet (RV(manual_step)).
  - O(state=verified) only reads. It compares the stored key, the expected key (O(license_key), optional) and
    the live licence information of this machine, for example after a backup restore, and reports
    RV(binding_status).
  - Every state reports the seat figures of the key when they can be read (RV(seats)).
author:
  - mikopbx.marketplace maintainers (@mikopbx-marketplace)
extends_documentation_fragment:
  - mikopbx.marketplace.connection
  - mikopbx.marketplace.attributes
attributes:
  check_mode:
    support: full
    details:
      - No write request reaches the PBX in check mode, C(license:resetKey) included although it is an HTTP GET.
        Only reads are sent (stored key, licence information); the result says what would change.
      - Without O(known_seats) check mode cannot know whether the licensing service would grant a seat, so a
        predicted bind may still fail with licence error 2008 in the real run.
  diff_mode:
    support: full
    details:
      - The diff shows the stored key (masked) and the binding status before and after.
options:
  state:
    description:
      - V(present) ensures that the PBX holds O(license_key) and a seat of it (applies the key, re-binds a key
        that has no seat on this machine, replaces a different key only with O(replace_key=true)).
      - V(absent) releases the key and the seat of this machine. Nothing happens when the PBX holds no key,
        or when O(license_key) is given and the PBX holds a different key (a warning says so).
      - V(verified) reports RV(binding_status) without changing anything; see O(fail_on_status).
    type: str
    choices: [present, absent, verified]
    default: present
  license_key:
    description:
      - The company licence key, C(MIKO-) followed by four groups of five letters or digits. Whitespace is
        removed and letters are upper-cased before it is checked; a malformed key is rejected before any request.
      - Required with O(state=present). With O(state=verified) it is the expected key (a different stored key
        is reported as V(key_mismatch)). With O(state=absent) it restricts the release to that key.
      - It is never returned or shown in clear; results show it masked as C(MIKO-*****-*****-*****-DDDDD).
    type: str
  replace_key:
    description:
      - With O(state=present), replace a different key already stored on the PBX (reset, then apply).
      - When V(false) a PBX that holds a different key makes the task fail naming both masked keys, and nothing
        is changed.
    type: bool
    default: false
  known_seats:
    description:
      - Seat figures of O(license_key) known from hosts that already hold it (the role fills them in). A host that
        does not hold the key cannot read its seat figures, so without this option the seat budget is only known
        once the licensing service answers.
      - With O(state=present), when O(known_seats.captured) is at least O(known_seats.count) (or the 10-host
        limit) the task stops before any write with the seat figures, the holders and the manual cabinet step.
    type: dict
    suboptions:
      count:
        description: Seats of the key (the C(count) of the C(MikoPBX base) feature).
        type: int
      captured:
        description: Seats currently captured.
        type: int
      holders:
        description: Inventory names of the hosts that hold a seat of the key; they are named in messages.
        type: list
        elements: str
        default: []
  force_release:
    description:
      - With O(state=absent), clear the key even when the licensing service does not answer the PBX, for a machine
        that is being decommissioned anyway.
      - The licensing service is then not told, so the seat of this machine stays held. The task returns a warning
        and RV(manual_step), the step that frees the seat in the licence cabinet by hand.
      - When V(false) (the default) such a release fails before any write and names the cause and the fix.
    type: bool
    default: false
  previous_host:
    description:
      - Name of the machine this PBX replaces (a migration or a restore onto new hardware). When no seat is free,
        RV(manual_step) names this host as the one whose seat must be reset in the licence cabinet.
    type: str
  on_seat_shortage:
    description:
      - What to do when the key has no free seat for this host (known from O(known_seats) or from licence error
        2008).
      - V(fail) fails the task; V(warn) returns with a warning, RV(manual_step) and no change, so a fleet run can
        report the host and go on.
    type: str
    choices: [fail, warn]
    default: fail
  fail_on_status:
    description:
      - With O(state=verified), the binding statuses that make the task fail. Empty (the default) only reports.
    type: list
    elements: str
    choices: [unbound, key_mismatch, binding_required, unknown]
    default: []
notes:
  - Whether a PBX is bound is decided by the licence information the PBX obtains from the licensing service for
    its own machine. The key string stored on the PBX alone never yields V(ok). When the licensing service does
    not answer (no Internet on the PBX, firewall, licence service down) the status is V(unknown), and
    O(state=present) fails rather than guess.
  - A machine that stores the key without holding a seat (a backup restored onto new hardware) is told apart by
    licence error 2008 for its licence information. O(state=present) re-binds it by resetting the key and applying
    it again, which captures a seat. If the licensing service then refuses the seat, the PBX is left without a key
    (that key held no seat here, and the licensing service stores nothing it refuses) and the task fails saying so,
    with RV(manual_step); pass O(known_seats) to have the task stop before the reset.
  - Before any reset the module makes sure the licensing service answers the PBX (the licence information just
    read, then C(license:ping) before a release or before replacing a different key, as licence information may
    come from the PBX's 120-second cache). When it does not, the task fails before any write, as
    C(license:resetKey) would clear the key locally and leave the seat held in the licence cabinet.
  - When O(replace_key=true) resets a working key and the licensing service then refuses the new key (a mistyped
    key, licence error 2026; a full key, 2008), the previous key is applied again once (the reset has just freed its
    seat) and the task fails naming the refusal and the restored key, masked, with C(changed=false). If that
    also fails, the message says that the PBX holds no key, which key it held, and the manual step.
  - If the answer to C(license:resetKey) or to the key application is lost (for example a timeout), the module
    re-reads the stored key and reports what the PBX holds (a lost C(resetKey) answer whose key is gone counts as a
    release, with a warning); it never sends C(license:resetKey) twice.
  - Seats of a machine that is gone can only be freed in the vendor's licence cabinet, which has no published API.
    The module never pretends to do it; it returns RV(manual_step) instead. The cabinet address contains the key
    itself, so it is only given as a template and the page is described by the masked key.
  - Neither API generation exposes a stable machine identifier. Hosts are named by their inventory names
    (O(previous_host), O(known_seats.holders)); match them to the machines listed in the cabinet.
  - C(license:resetKey) is an HTTP GET that changes the PBX; the module never sends it in check mode and the API
    client never retries it.
  - Licence information is cached by the PBX for 120 seconds per key; seat figures read right after a change
    on another host can lag behind, and a seat freed in the cabinet can still look bound for two minutes.
  - MikoPBX 2024.1 answers a failed licence-information request without any message, and caches that failure
    for 120 seconds. The module then asks the PBX's base-feature licence check (C(getMikoPBXFeatureStatus)) to
    tell a missing seat from a silent licensing service (RV(verified_by=feature_status)). Right after re-binding
    a V(binding_required) host both answers still come from the cache. The seat is then taken as confirmed by the
    licensing service's acceptance of the key (RV(verified_by=key_application)) and a warning says so. A re-run
    inside those two minutes still sees V(binding_required) and re-binds again (reset, then apply; the seat is
    released first, so no extra seat is taken). Verify after two minutes.
  - Ordering a migration (check the new host, release the old one, bind the new one, verify) is the job of the
    playbook or role; each step of this module is idempotent and safe to re-run.
seealso:
  - module: mikopbx.marketplace.mikopbx_license_info
  - module: mikopbx.marketplace.mikopbx_register
"""

EXAMPLES = r"""
- name: Release the binding on the old machine before the migration
  mikopbx.marketplace.mikopbx_license_binding:
    url: https://pbx-07-old.example.net
    api_key: "{{ vault_pbx07_api_key }}"
    state: absent
  register: released

- name: Bind the company key on the new machine
  mikopbx.marketplace.mikopbx_license_binding:
    url: https://pbx-07.example.net
    api_key: "{{ vault_pbx07_api_key }}"
    state: present
    license_key: "{{ vault_company_license_key }}"
    previous_host: pbx-07-old
    known_seats:
      count: 10
      captured: 9
      holders: [pbx-01, pbx-02, pbx-03, pbx-04, pbx-05, pbx-06, pbx-08, pbx-09, pbx-10]

- name: Verify the binding after a backup restore (report only)
  mikopbx.marketplace.mikopbx_license_binding:
    url: https://pbx-07.example.net
    username: admin
    password: "{{ vault_pbx07_password }}"
    state: verified
    license_key: "{{ vault_company_license_key }}"
  register: binding

- name: Show the verdict
  ansible.builtin.debug:
    msg: "{{ binding.binding_status }} ({{ binding.license_key_masked }})"

- name: Fail the play when a restored PBX is not bound to the company key
  mikopbx.marketplace.mikopbx_license_binding:
    url: https://pbx-07.example.net
    api_key: "{{ vault_pbx07_api_key }}"
    state: verified
    license_key: "{{ vault_company_license_key }}"
    fail_on_status: [unbound, key_mismatch, binding_required, unknown]

# If the company key is refused (mistyped: 2026, no free seat: 2008), the foreign key is applied again and
# the task fails saying so: the PBX is never left without a key by this task.
- name: Re-bind a PBX restored from another company's backup (replaces the foreign key)
  mikopbx.marketplace.mikopbx_license_binding:
    url: https://pbx-07.example.net
    api_key: "{{ vault_pbx07_api_key }}"
    state: present
    license_key: "{{ vault_company_license_key }}"
    replace_key: true

- name: Clear the key of a PBX being decommissioned whose licensing access is already cut
  mikopbx.marketplace.mikopbx_license_binding:
    url: https://pbx-09.example.net
    api_key: "{{ vault_pbx09_api_key }}"
    state: absent
    force_release: true
  register: cleared

- name: Free its seat in the licence cabinet by hand (the licensing service was not told)
  ansible.builtin.debug:
    msg: "{{ cleared.manual_step.instructions }}"
  when: cleared.manual_step
"""

RETURN = r"""
binding_status:
  description:
    - Binding before the task. V(ok) (stores the expected key and this machine holds a seat, confirmed by live
      licence info), V(unbound) (no key), V(key_mismatch) (a key other than O(license_key)), V(binding_required)
      (the key is stored but licence info answers error 2008 for this machine), V(unknown) (the licensing service
      did not answer).
  returned: always
  type: str
  sample: binding_required
binding_status_after:
  description:
    - Binding after the task (predicted in check mode). After a bind it is confirmed by live licence info.
    - After a failed write it describes what a re-read found; V(unknown) when the stored key could not be re-read.
  returned: always
  type: str
  sample: ok
license_key_masked:
  description: The key stored on the PBX after the task, masked; null when it holds none.
  returned: always
  type: str
  sample: MIKO-*****-*****-*****-7QX2B
released_key_masked:
  description: The masked key that was released (or would be in check mode) by a reset; null when none was.
  returned: always
  type: str
  sample: MIKO-*****-*****-*****-7QX2B
actions:
  description:
    - Writes performed (or planned in check mode), in order. V(restore_previous_key) follows a refused V(apply_key)
      when the previous key was applied again.
  returned: always
  type: list
  elements: str
  sample: [reset_key, apply_key]
seats:
  description:
    - Seat figures of the key. Read from live licence info when this host can read it, else taken from
      O(known_seats); null when neither is available.
  returned: always
  type: dict
  sample:
    source: licence_info
    count: 10
    captured: 9
    free: 1
    host_limit: 10
    full: false
    holders: []
    features:
      - {product: MikoPBX, feature: MikoPBX base, count: 10, captured: 9, free: 1}
  contains:
    source:
      description: V(licence_info) or V(known_seats).
      type: str
    count:
      description: Seats of the base feature of the key.
      type: int
    captured:
      description: Seats captured by machines.
      type: int
    free:
      description: Seats still free.
      type: int
    host_limit:
      description: Most hosts one key can serve (10).
      type: int
    full:
      description: True when no further host can take a seat.
      type: bool
    holders:
      description: Hosts known to hold seats (from O(known_seats.holders)).
      type: list
      elements: str
    features:
      description: Every licensed feature of the key with its C(count), C(captured) and C(free) figures.
      type: list
      elements: dict
manual_step:
  description:
    - The step an operator must do by hand in the vendor's licence cabinet when no seat is free, when a release is
      refused or forced while the licensing service does not answer (the seat of this machine), or when a failed
      replacement left the PBX without a key; null otherwise.
  returned: always
  type: dict
  sample:
    where: "licence cabinet (no API: this step is manual)"
    page: "the licence cabinet page of key MIKO-*****-*****-*****-7QX2B (open it from the PBX's Marketplace →
      Licence tab; its address is https://lm.mikopbx.com/client-cabinet/session/index/<license key>/)"
    license_key_masked: MIKO-*****-*****-*****-7QX2B
    reset_seat_of: pbx-07-old
    holders: [pbx-01, pbx-02]
    instructions: "Open the licence cabinet page of key MIKO-*****-*****-*****-7QX2B (...) and reset the seat
      (binding) of pbx-07-old, the machine this PBX replaces; then run this task again for pbx-07."
verified_by:
  description:
    - The answer the final binding status rests on. V(licence_info) (licence information answered for this
      machine), V(feature_status) (MikoPBX 2024.1 base-feature licence check), V(key_application) (the licensing
      service granted the seat when the key was applied in this run); null when nothing was asked (no key, or a
      different key).
  returned: always
  type: str
  sample: licence_info
licence_error:
  description: The licence failure that decided the status (for example code 2008), masked; null when none.
  returned: always
  type: dict
  sample: {code: 2008, classification: "licence:2008", message: "..."}
error:
  description:
    - The classified failure (masked), like every module of the collection returns it. A seat shortage is
      classified V(licence:2008) whether the licensing service answered it or O(known_seats) predicted it.
  returned: on failure
  type: dict
  sample: {classification: "licence:2008", licence_code: 2008, message: "...", hint: "...", status: null}
generation:
  description: API generation of the PBX, V(v3) (2026.1) or V(legacy) (2024.1).
  returned: always
  type: str
  sample: v3
diff:
  description: Masked stored key and binding status before and after (changed keys only).
  returned: when diff mode is on
  type: dict
  sample: {before: {binding_status: unbound, license_key: null},
           after: {binding_status: ok, license_key: "MIKO-*****-*****-*****-7QX2B"}}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.mikopbx.marketplace.plugins.module_utils.binding import (  # noqa: E402
    BindingFailure,
    BindingManager,
    BindingOptions,
)
from ansible_collections.mikopbx.marketplace.plugins.module_utils.common import (  # noqa: E402
    check_connection_options,
    client_from_module,
    connection_argument_spec,
    connection_module_kwargs,
    fail_from_error,
)
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError  # noqa: E402
from ansible_collections.mikopbx.marketplace.plugins.module_utils.licence import validate_license_key  # noqa: E402

STATUS_CHOICES = ["unbound", "key_mismatch", "binding_required", "unknown"]


def argument_spec() -> dict:
    spec = connection_argument_spec()
    spec.update(
        state=dict(type="str", choices=["present", "absent", "verified"], default="present"),
        license_key=dict(type="str", no_log=True),
        replace_key=dict(type="bool", default=False, no_log=False),
        force_release=dict(type="bool", default=False, no_log=False),
        known_seats=dict(
            type="dict",
            no_log=False,
            options=dict(
                count=dict(type="int"),
                captured=dict(type="int"),
                holders=dict(type="list", elements="str", default=[]),
            ),
        ),
        previous_host=dict(type="str"),
        on_seat_shortage=dict(type="str", choices=["fail", "warn"], default="fail"),
        fail_on_status=dict(type="list", elements="str", choices=STATUS_CHOICES, default=[]),
    )
    return spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("state", "present", ["license_key"])],
        **connection_module_kwargs(),
    )
    # Connection options are checked before anything else, a password in the url included.
    check_connection_options(module)
    params = module.params
    action = {
        "present": "bind the licence key",
        "absent": "release the licence key",
        "verified": "verify the licence binding",
    }[params["state"]]

    # A malformed key is refused before any request reaches the PBX.
    license_key = None
    if params["license_key"]:
        try:
            license_key = validate_license_key(params["license_key"])
        except MikoPBXError as err:
            fail_from_error(module, err, action)
        module.no_log_values.add(license_key)

    options = BindingOptions(
        state=params["state"],
        license_key=license_key,
        replace_key=params["replace_key"],
        known_seats=params["known_seats"],
        previous_host=params["previous_host"],
        on_seat_shortage=params["on_seat_shortage"],
        fail_on_status=params["fail_on_status"],
        force_release=params["force_release"],
    )

    client = client_from_module(module)
    manager = BindingManager(client, options, check_mode=module.check_mode, warn=module.warn)
    try:
        result = manager.run()
    except BindingFailure as failure:
        body = dict(failure.result)
        body["generation"] = _generation(client)
        if failure.error is not None:
            body["error"] = failure.error.to_dict()
        msg = body.pop("msg", failure.msg)
        if not module._diff:
            body.pop("diff", None)
        module.fail_json(msg="MikoPBX %s: failed to %s: %s" % (client.url, action, msg), **body)
    except MikoPBXError as err:
        fail_from_error(module, err, action, client=client, generation=_generation(client))

    result["generation"] = client.generation
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


def _generation(client) -> str | None:
    """The generation if already known; resolving it here could send another login after a failure."""
    return getattr(client, "_generation", None)


if __name__ == "__main__":
    main()
