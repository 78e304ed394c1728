#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mikopbx_register
short_description: Register a MikoPBX in the module marketplace with a licence key or a trial registration
version_added: 0.1.0
description:
  - Ensures that a MikoPBX holds the company's licence key, which registers it in the MikoPBX module
    marketplace.
  - With O(license_key), the key is normalised (whitespace removed, upper case) and validated locally
    B(before) anything is sent. A malformed key fails with zero requests to the PBX, because MikoPBX
    treats a malformed key as a request for a new trial registration and would issue a second company key.
  - The key stored on the PBX is read first. The key is applied when the PBX holds no key; nothing is sent
    when it already holds the same key. A PBX that holds a different key is left alone unless O(force=true).
  - With O(company_name), O(email) and O(contact_name) (and optionally O(phone) and O(tax_id)), a trial
    registration obtains a new company key, but only when the PBX holds no key at all. A PBX that holds any key
    is never registered a second time; the task then reports V(changed=false).
  - Works with both MikoPBX API generations (2026.1 REST v3 and 2024.1 legacy), detected automatically.
author:
  - mikopbx.marketplace maintainers (@mikopbx-marketplace)
extends_documentation_fragment:
  - mikopbx.marketplace.connection
  - mikopbx.marketplace.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode only the stored key is read; no registration request is sent. The result
        says which action would be taken.
  diff_mode:
    support: full
    details:
      - The diff shows the stored key before and after, masked as C(MIKO-*****-*****-*****-DDDDD).
        After a trial registration in check mode the new key is not known yet and is shown as a placeholder.
options:
  license_key:
    description:
      - The company's licence key, C(MIKO-) followed by four groups of five letters or digits.
      - Surrounding and embedded whitespace is removed and letters are upper-cased before the key is checked,
        so a key pasted from an e-mail works. Any other deviation fails before a request is sent.
      - Mutually exclusive with O(company_name), O(email), O(contact_name), O(phone) and O(tax_id).
    type: str
  coupon:
    description:
      - An upgrade coupon (C(MIKOUPD-) followed by four groups of five letters or digits) activated together
        with O(license_key). Requires O(license_key); a trial registration takes no coupon.
      - It is sent together with the key when the key is applied or replaced. When the PBX already holds
        the key, the coupon is only activated with O(force=true), because MikoPBX cannot tell whether a
        coupon was activated before. See the notes.
    type: str
  company_name:
    description:
      - Company name for a trial registration. Any Unicode text is sent unchanged (UTF-8) apart from
        removing surrounding whitespace.
      - Requires O(email) and O(contact_name).
    type: str
  email:
    description:
      - Contact e-mail for a trial registration; the licence key is mailed there.
    type: str
  contact_name:
    description:
      - Contact person for a trial registration.
    type: str
  phone:
    description:
      - Contact phone for a trial registration (optional).
      - On MikoPBX 2026.1 a phone written as a plain number (for example C(+70000000000)) reaches the
        licensing service as an integer without the leading C(+); write it with spaces or dashes to keep it
        as text. The module warns about this.
    type: str
  tax_id:
    description:
      - Company tax or registration number for a trial registration (optional), 10 to 12 digits as the
        PBX's own registration form requires.
    type: str
  force:
    description:
      - Replace a different licence key already stored on the PBX by O(license_key), and activate O(coupon)
        even when the PBX already holds O(license_key).
      - Has no effect on a trial registration; a PBX that holds a key is never registered again.
    type: bool
    default: false
  reveal_license_key:
    description:
      - Return the stored licence key in clear in RV(license_key), for example to pass the key obtained by a trial
        registration to the other PBXs of the fleet.
      - Only allowed when the task itself has C(no_log=true), otherwise the module fails before any request.
    type: bool
    default: false
notes:
  - Requires the Python library C(requests) on the controller, where the module runs (C(connection=local)).
  - Cost on a PBX that already holds the requested key is one read of the stored key (plus the login when no
    API key is used); no write request is sent.
  - MikoPBX offers no way to read which coupons were activated. A coupon given with a key that the PBX already
    holds is therefore not activated again unless O(force=true), and a forced activation of a used coupon fails
    with licence code 2041. Give O(coupon) together with the key change that should carry it, or run it once
    with O(force=true) and then remove it from the task.
  - Replacing a key with O(force=true) does not release the seat that this machine held under the old key; release
    it first with M(mikopbx.marketplace.mikopbx_license_binding)
    (O(mikopbx.marketplace.mikopbx_license_binding#module:state=absent)) or in the licence cabinet.
  - Only the key string stored on the PBX is compared; whether the licensing service holds a seat for this
    machine under that key is not checked. A PBX restored from a backup onto new hardware stores the key but holds
    no seat, and this module reports it as registered with V(action=none). Follow this module with
    M(mikopbx.marketplace.mikopbx_license_binding) (O(mikopbx.marketplace.mikopbx_license_binding#module:state=present)
    to take the seat, or V(verified) to only check it) to verify the seat.
  - Trial registration fields are sent as form data to 2024.1 (it ignores JSON bodies) and as JSON to 2026.1.
    MikoPBX 2026.1 trims text values and converts numeric strings to integers, so a phone or tax number with a
    leading C(+) or C(0) loses that character there.
  - A registration request that times out is never repeated blindly. The stored key is read again first; a key
    application is repeated once only if the key did not arrive (applying the same key again is harmless), a
    trial registration is not repeated at all (run the task again later; it does nothing once the key is stored).
  - A licence key and a coupon are secrets; they appear in results, messages and diffs only masked as
    C(MIKO-*****-*****-*****-DDDDD).
seealso:
  - module: mikopbx.marketplace.mikopbx_license_info
  - module: mikopbx.marketplace.mikopbx_license_binding
  - module: mikopbx.marketplace.mikopbx_reachability
"""

EXAMPLES = r"""
- name: Put the PBX under the company licence key
  mikopbx.marketplace.mikopbx_register:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    ca_path: "{{ mikopbx_ca_path }}"
    license_key: "{{ company_license_key }}"

- name: Apply the key with an upgrade coupon, logging in with a password (2024.1 has no API keys)
  mikopbx.marketplace.mikopbx_register:
    url: "{{ mikopbx_url }}"
    username: admin
    password: "{{ mikopbx_password }}"
    validate_certs: false
    license_key: "{{ company_license_key }}"
    coupon: "{{ company_coupon }}"

- name: Register the company once (trial) and keep the new key for the other PBXs
  mikopbx.marketplace.mikopbx_register:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    validate_certs: false
    company_name: ООО "Ромашка"
    email: it@example.com
    contact_name: Иван Петров
    phone: +7 900 000-00-00
    reveal_license_key: true
  no_log: true
  run_once: true
  register: registration

- name: Show what happened (the key stays masked)
  ansible.builtin.debug:
    msg: "{{ registration.msg }} ({{ registration.license_key_masked }})"
  run_once: true

- name: Move a PBX that holds another company's key to ours
  mikopbx.marketplace.mikopbx_register:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    validate_certs: false
    license_key: "{{ company_license_key }}"
    force: true
"""

RETURN = r"""
registered:
  description: Whether the PBX holds a licence key after the task (in check mode, whether it would).
  returned: success
  type: bool
  sample: true
action:
  description:
    - What the task did (or would do in check mode).
    - V(none) nothing to do; V(applied_key) a key was stored on a PBX that had none; V(replaced_key) a different
      key was replaced (O(force=true)); V(registered_trial) a trial registration issued a new key;
      V(applied_coupon) the coupon was activated for the key already stored (O(force=true)).
  returned: always
  type: str
  choices: [none, applied_key, replaced_key, registered_trial, applied_coupon]
  sample: applied_key
license_key_masked:
  description:
    - The key stored on the PBX after the task, masked. Empty when the PBX holds no key.
    - In check mode the key that would be stored; empty for a trial registration in check mode.
  returned: always
  type: str
  sample: MIKO-*****-*****-*****-DDDDD
license_key:
  description: The stored licence key in clear.
  returned: when O(reveal_license_key=true) (which requires C(no_log) on the task) and the PBX holds a key
  type: str
  sample: MIKO-AAAAA-BBBBB-CCCCC-DDDDD
coupon_applied:
  description:
    - Whether a coupon was activated by this task.
    - V(null) when that is unknown, because the request carrying the key and the coupon timed out and the
      key was found stored afterwards; the task then also warns. A later forced activation of a coupon that was
      activated fails with licence code 2041.
  returned: always
  type: bool
  sample: false
generation:
  description: The API generation of the PBX, V(v3) (2026.1) or V(legacy) (2024.1).
  returned: when the PBX was contacted
  type: str
  sample: v3
msg:
  description: One sentence saying what happened.
  returned: always
  type: str
  sample: licence key MIKO-*****-*****-*****-DDDDD applied
diff:
  description: The stored key before and after (masked), only the changed keys.
  returned: when running with C(--diff)
  type: dict
  sample:
    before:
      license_key: ""
      registered: false
    after:
      license_key: MIKO-*****-*****-*****-DDDDD
      registered: true
error:
  description: Details of a failure (masked), with the classification and the fix.
  returned: failure
  type: dict
  sample:
    classification: "licence:2026"
    licence_code: 2026
    message: the licensing service does not know this licence key
    hint: check license_key against the licence e-mail or the licence cabinet
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mikopbx.marketplace.plugins.module_utils import common, register_plan
from ansible_collections.mikopbx.marketplace.plugins.module_utils.api import LEGACY_ROOT, OPERATIONS, V3_ROOT
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError

OP_PROCESS = "license.processUserRequest"
# Errors after which the write may or may not have reached the PBX: re-read before anything else.
UNCERTAIN_CLASSIFICATIONS = ("timeout", "unreachable", "server")
TRIAL_OPTIONS = ("company_name", "email", "contact_name", "phone", "tax_id")


def argument_spec() -> dict[str, Any]:
    spec = common.connection_argument_spec()
    spec.update(
        license_key=dict(type="str", no_log=True),
        coupon=dict(type="str", no_log=True),
        company_name=dict(type="str"),
        email=dict(type="str"),
        contact_name=dict(type="str"),
        phone=dict(type="str"),
        tax_id=dict(type="str"),
        force=dict(type="bool", default=False),
        reveal_license_key=dict(type="bool", default=False, no_log=False),
    )
    return spec


class Registrar:
    """read → plan → diff → check-mode stop → write → re-read, for one PBX."""

    def __init__(self, module: AnsibleModule, client: Any, desired: register_plan.DesiredRegistration) -> None:
        self.module = module
        self.client = client
        self.desired = desired
        self.warnings: list[str] = []

    # --- reads ----------------------------------------------------------------------------------

    def stored_key(self, fresh: bool = False) -> str:
        """The key in PbxSettings ``PBXLicense`` ('' when none); ``fresh`` bypasses the client's cache."""
        settings = common_fresh_settings(self.client) if fresh else self.client.settings()
        key = (settings or {}).get("PBXLicense") or ""
        key = "".join(str(key).split())
        if key:
            self._secret(key)
        return key

    def reread_after(self, err: MikoPBXError) -> str:
        """The stored key after an uncertain write; if even that read fails, the write's error stands."""
        try:
            return self.stored_key(fresh=True)
        except MikoPBXError:
            raise err from None

    def _secret(self, value: str) -> None:
        add = getattr(self.client, "add_secret", None)
        if add:
            add(value)
        self.module.no_log_values.add(value)

    # --- the flow -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        stored = self.stored_key()
        try:
            plan = register_plan.plan_registration(self.desired, stored)
        except register_plan.RegisterRefused as refused:
            self.fail(str(refused), classification="invalid_input", registered=bool(stored), stored=stored, hint="")
        self.warnings.extend(plan.warnings)
        if plan.action == register_plan.ACTION_REGISTERED_TRIAL:
            self.warnings.extend(register_plan.sanitiser_warnings(plan.body or {}, self.client.generation))

        if not plan.changed or self.module.check_mode:
            return self.result(plan, stored_after=plan.target_key or "", coupon_applied=False, checked=True)

        if plan.action == register_plan.ACTION_REGISTERED_TRIAL:
            stored_after, coupon_applied = self.register_trial(plan)
        else:
            stored_after, coupon_applied = self.apply_key(plan)
        return self.result(plan, stored_after=stored_after, coupon_applied=coupon_applied, checked=False)

    def apply_key(self, plan: register_plan.RegisterPlan) -> tuple[str, bool | None]:
        """processUserRequest with licKey (+coupon); a timed-out attempt is re-read, then repeated once."""
        body = plan.body or {}
        for attempt in (1, 2):
            try:
                answer = self.client.call(OP_PROCESS, data=dict(body), allow_failure=True)
                uncertain = uncertain_answer(self.client, answer)
                if uncertain is not None:
                    raise uncertain
            except MikoPBXError as err:
                if err.classification.split(":")[0] not in UNCERTAIN_CLASSIFICATIONS or err.licence_code:
                    raise
                # The request may have been carried out: look before repeating it.
                stored = self.reread_after(err)
                if stored == plan.target_key:
                    if plan.sends_coupon:
                        self.warnings.append(
                            "the registration request timed out after the key was stored; whether the coupon was "
                            "activated is unknown (a later forced activation fails with 2041 if it was)"
                        )
                        return stored, None
                    return stored, False
                if attempt == 2:
                    raise
                continue
            return self._key_answer(plan, answer)
        raise AssertionError("unreachable")  # pragma: no cover

    def _key_answer(self, plan: register_plan.RegisterPlan, answer: Any) -> tuple[str, bool]:
        messages = answer.messages or {}
        if answer.ok:
            stored = self.stored_key(fresh=True)
            if stored != plan.target_key:
                self.fail(
                    "the PBX answered the key application with success but stores %s instead of %s"
                    % (register_plan.mask_key(stored), register_plan.mask_key(plan.target_key)),
                    classification="server",
                    hint="read the licence state with mikopbx.marketplace.mikopbx_license_info before running again",
                    registered=bool(stored),
                    stored=stored,
                    changed=stored != plan.stored_key,
                )
            return stored, plan.sends_coupon

        # One read tells a real refusal from 2024.1's "result false, no messages" for a key that is
        # already stored (a repeat after a timeout, a concurrent run), and shows whether the key was
        # stored while only the coupon failed (both travel in one request).
        stored = self.stored_key(fresh=True)
        silent = not register_plan.licence_failure_texts(messages) and not messages.get("info")
        if silent and stored == plan.target_key and not plan.sends_coupon:
            return stored, False

        failure = register_plan.explain_licence_failure(
            messages, answer.status, sent_coupon=plan.sends_coupon, code=_numbered(answer.licence_code)
        )
        key_changed = stored != plan.stored_key
        action_text = "apply licence key %s" % register_plan.mask_key(plan.target_key)
        if key_changed and stored == plan.target_key and plan.sends_coupon:
            action_text = "activate the coupon (the licence key %s was applied)" % register_plan.mask_key(stored)
        self.fail_licence(failure, action_text, answer.status, stored=stored, changed=key_changed)
        raise AssertionError("unreachable")  # pragma: no cover

    def register_trial(self, plan: register_plan.RegisterPlan) -> tuple[str, bool]:
        """processUserRequest with the company details; never repeated automatically."""
        try:
            answer = self.client.call(OP_PROCESS, data=dict(plan.body or {}), allow_failure=True)
            uncertain = uncertain_answer(self.client, answer)
            if uncertain is not None:
                raise uncertain
        except MikoPBXError as err:
            if err.classification.split(":")[0] not in UNCERTAIN_CLASSIFICATIONS or err.licence_code:
                raise
            stored = self.reread_after(err)
            if stored:
                self.warnings.append("the registration request failed (%s) but the PBX now holds a key" % err.message)
                return stored, False
            err.hint = (
                "the trial registration may still complete on the PBX: it was not repeated, to avoid a second "
                "registration. Wait a minute and run the task again (it does nothing once the PBX holds a key); "
                "if a licence key arrives by e-mail, pass it as license_key instead"
            )
            raise

        stored = self.stored_key(fresh=True)
        if answer.ok and stored:
            return stored, False
        if stored:  # an error answer, but the key is there: the registration did happen
            self.warnings.append("the PBX reported a problem with the registration but stores a licence key")
            return stored, False
        failure = register_plan.explain_licence_failure(
            answer.messages or {}, answer.status, code=_numbered(answer.licence_code)
        )
        self.fail_licence(failure, "register company %r" % plan.body["companyname"], answer.status, stored=stored)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- results --------------------------------------------------------------------------------

    def result(
        self, plan: register_plan.RegisterPlan, *, stored_after: str, coupon_applied: bool | None, checked: bool
    ) -> dict[str, Any]:
        msg = plan.msg
        if self.module.check_mode and plan.changed:
            msg = "check mode: would have: %s" % plan.msg
        elif plan.action == register_plan.ACTION_REGISTERED_TRIAL:
            msg = "%s %s" % (plan.msg, register_plan.mask_key(stored_after))
        if coupon_applied is None:
            msg += "; whether the coupon was activated is unknown (the request timed out)"
        result: dict[str, Any] = dict(
            changed=plan.changed,
            action=plan.action,
            registered=bool(stored_after) or (plan.action == register_plan.ACTION_REGISTERED_TRIAL),
            license_key_masked=register_plan.mask_key(stored_after),
            coupon_applied=coupon_applied,
            generation=self.client.generation,
            msg=msg,
        )
        if self.module._diff:
            diff = plan.diff()
            if plan.action == register_plan.ACTION_REGISTERED_TRIAL and stored_after:
                diff["after"]["license_key"] = register_plan.mask_key(stored_after)
            result["diff"] = diff
        if self.module.params["reveal_license_key"] and stored_after and not (checked and plan.changed):
            # Allowed only under no_log (checked in main); the key must not be scrubbed from this field.
            self.module.no_log_values.discard(stored_after)
            result["license_key"] = stored_after
        for warning in self.warnings:
            self.module.warn(warning)
        return result

    def fail_licence(
        self, failure: register_plan.LicenceFailure, action: str, status: int | None, **extra: Any
    ) -> None:
        what = "licence code %s: " % failure.code if failure.code else ""
        self.fail(
            "failed to %s: %s%s" % (action, what, failure.meaning),
            classification=failure.classification,
            licence_code=failure.code,
            status=status,
            pbx_message=failure.text or None,
            hint=failure.fix,
            method="POST",
            **extra,
        )

    def fail(
        self,
        msg: str,
        *,
        classification: str,
        stored: str | None = None,
        registered: bool | None = None,
        changed: bool = False,
        licence_code: int | None = None,
        status: int | None = None,
        pbx_message: str | None = None,
        hint: str | None = None,
        method: str | None = None,
    ) -> None:
        err = MikoPBXError(
            msg,
            classification,
            status=status,
            licence_code=licence_code,
            pbx_message=pbx_message,
            hint=hint,
            url=self.client_url(),
            method=method,
            path=self.process_path() if method else None,
            secrets=getattr(self.client, "secrets", set()),
        )
        extra: dict[str, Any] = dict(changed=changed, error=err.to_dict(), generation=self.client.generation)
        if stored is not None:
            extra["license_key_masked"] = register_plan.mask_key(stored)
            extra["registered"] = bool(stored) if registered is None else registered
        for warning in self.warnings:
            self.module.warn(warning)
        # Like common.fail_from_error: the PBX, the action and cause, HTTP status, the PBX's words, the fix.
        self.module.fail_json(msg="MikoPBX %s: %s" % (self.client_url(), err.describe()), **extra)

    def process_path(self) -> str | None:
        """The URL path of processUserRequest in this PBX's generation (for the error details)."""
        route = getattr(OPERATIONS.get(OP_PROCESS), self.client.generation, None)
        if route is None:
            return None
        return (V3_ROOT if self.client.generation == "v3" else LEGACY_ROOT) + route.path

    def client_url(self) -> str:
        return str(getattr(self.client, "url", self.module.params.get("url")))


def common_fresh_settings(client: Any) -> dict[str, Any]:
    """settings() without the client's cache (the key may just have changed)."""
    client.invalidate_settings()
    return client.settings()


def uncertain_answer(client: Any, answer: Any) -> MikoPBXError | None:
    """The error for an answer after which the write may or may not have been carried out.

    A v3 worker timeout (HTTP 400 "Request timeout or worker not responding") or a legacy HTTP 500
    means the request sat in the PBX's queue and may still run; a full queue (503 without a licence
    message) or a gateway timeout means it probably did not. Either way: re-read before repeating.
    """
    if answer.ok:
        return None
    err = client.error_from_result(answer, OP_PROCESS, method="POST")
    if err.classification == "timeout":
        return err
    if answer.status == 504 or (answer.status == 503 and not answer.messages.get("license")):
        return err
    return None


def _numbered(code: Any) -> int | None:
    """The shared parser's licence code when it is a number (it also returns "dns"/"no_answer")."""
    return code if isinstance(code, int) and code in register_plan.LICENCE_CODES else None


def main() -> None:
    connection = common.connection_module_kwargs()
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[["license_key", option] for option in TRIAL_OPTIONS],
        # license_key/company_name and coupon -> license_key are checked by desired_from_params, whose
        # messages name the missing option (Ansible's generic checks would run first and say less).
        required_one_of=connection["required_one_of"],
        required_together=connection["required_together"] + [["company_name", "email", "contact_name"]],
        required_by={"phone": "company_name", "tax_id": "company_name"},
    )
    common.check_connection_options(module)

    # Everything that can be checked locally is checked before the first request.
    if module.params["reveal_license_key"] and not module.no_log:
        module.fail_json(
            msg="reveal_license_key: true returns the licence key in clear and is only allowed when the task has "
            "no_log: true; add no_log: true to the task (nothing was sent to the PBX)",
            action="none",
            changed=False,
        )
    try:
        desired = register_plan.desired_from_params(module.params)
    except MikoPBXError as err:
        module.fail_json(msg=err.describe(), error=err.to_dict(), action="none", changed=False)

    client = common.client_from_module(module)
    registrar = Registrar(module, client, desired)
    try:
        result = registrar.run()
    except MikoPBXError as err:
        common.fail_from_error(module, err, "register the PBX in the marketplace")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
