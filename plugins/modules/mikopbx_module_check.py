#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mikopbx_module_check
short_description: Find MikoPBX extension modules that are disabled, above all those switched off for lack of a licence
version_added: 0.1.0
description:
  - Lists the extension modules installed on a MikoPBX with their state and disable reason, and finds the
    modules that the PBX switched off because their licence is unavailable (shown in the web interface as a
    crossed-out key).
  - Disable reasons are classified as V(licence) (C(DisabledByLicense)), V(user) (switched off by a person),
    V(exception) (C(DisabledByException)) and V(crash_loop) (C(DisabledByCrashLoop), MikoPBX 2026.1 only).
  - Only a B(disabled) module whose reason is C(DisabledByLicense) is a licence problem. MikoPBX does not clear
    the reason when a module is enabled again, so an enabled module may still carry an old licence reason;
    it is reported in RV(modules[].disable_reason_raw) but is not a problem.
  - On MikoPBX 2026.1 the module table is read with one fixed, read-only C(SELECT) through
    C(system:executeSqlRequest); the module sends no other SQL. On MikoPBX 2024.1, which has neither a module
    list in its REST API nor an SQL endpoint, the admin cabinet's modules page is read and parsed.
  - Optionally asserts that required modules are installed, enabled and licensed (O(required)), selects modules
    with a JMESPath expression (O(query)), checks that the PBX reaches the module marketplace
    (O(check_marketplace)) and tries once to bring licence-disabled modules back (O(remediate)).
author:
  - mikopbx.marketplace maintainers (@mikopbx-marketplace)
extends_documentation_fragment:
  - mikopbx.marketplace.connection
  - mikopbx.marketplace.attributes
attributes:
  check_mode:
    support: full
    details:
      - Everything is read as in a normal run. With O(remediate=true) no licence capture and no enable request
        is sent; RV(remediation) lists the modules that would be tried, and the task reports a change when there is
        at least one.
  diff_mode:
    support: partial
    details:
      - Only with O(remediate=true). The diff shows the enabled state and disable reason of the modules that
        remediation brought back; in check mode, of the modules it would try (whether the licence allows it is
        only known in a real run).
options:
  required:
    description:
      - Module ids (C(uniqid), for example C(ModuleUsersUI)) that must be installed, enabled and licensed.
      - Ids are compared without regard to case.
      - Problems are returned in RV(required_problems); the task fails on them while V(required) is in
        O(fail_on).
    type: list
    elements: str
    default: []
  query:
    description:
      - A JMESPath expression applied to RV(modules); its value is returned as RV(selected).
      - For example V([?licence_problem].uniqid) or V([?!enabled && disable_reason!='user']).
      - Needs the Python library C(jmespath) on the controller. The expression is checked before anything is
        sent to the PBX.
    type: str
  remediate:
    description:
      - For every module disabled for lack of a licence, try once to bring it back. When the marketplace
        describes the module's licence feature and product (C(lic_feature_id), C(lic_product_id) from
        C(getModuleInfo)), ask the PBX to capture that feature, then enable the module.
      - B(This can start a trial.) MikoPBX handles the capture request by trying to capture the feature and, when
        that fails (no paid licence for the product, or no free seat of it), by adding the product's one-time
        trial to the company licence and capturing the feature from the trial. A module brought back this way
        works only until the trial ends, and the company cannot get that trial again. Check the products with
        M(mikopbx.marketplace.mikopbx_license_info) before and after; see the notes.
      - Exactly one attempt per module and run, never in check mode, never repeated in a loop. When the licence
        is still unavailable the module is left as it is and RV(remediation) says why.
      - Modules disabled by a user, by an exception or by a crash loop are never touched.
    type: bool
    default: false
  fail_on:
    description:
      - Which findings fail the task. By default only missing or unusable O(required) modules do; the other
        findings are reported without failing the host, so a fleet report can collect them.
      - V(licence) a module is disabled for lack of a licence (after remediation, if any); V(exception) and
        V(crash_loop) a module is disabled for that reason; V(required) a required module is missing, disabled
        or unlicensed; V(marketplace) the PBX does not reach the module marketplace.
    type: list
    elements: str
    choices: [licence, exception, crash_loop, required, marketplace]
    default: [required]
  check_marketplace:
    description:
      - Ask the PBX for the marketplace's module list (C(modules:getAvailableModules)) and report in
        RV(marketplace) whether the PBX reaches the marketplace (V(ok)), cannot reach it (V(unreachable)), or
        reaches it but gets an error answer (V(upstream_error)).
      - This is the PBX's own view; the request to the marketplace is made by the PBX, not by the controller.
    type: bool
    default: true
notes:
  - Requires the Python library C(requests) on the controller, and C(jmespath) when O(query) is used.
  - Cost per PBX without remediation is two API requests (the module table and the marketplace check), plus the
    login when no API key is used. On MikoPBX 2024.1 the module table is the admin cabinet's modules page, which
    the client also uses for the PBX's settings, so it is fetched once.
  - MikoPBX 2026.1 needs an API key with full permissions (or a login) for C(system:executeSqlRequest); a
    restricted key is refused with HTTP 401 and the task fails with that reason.
  - On MikoPBX 2024.1 the page shows no raw reason. The reason is read from the icons next to the module (the
    crossed-out key, the red bug, the red redo arrow) and a disabled module without an icon is taken as disabled
    by the user; RV(modules[].disable_reason_raw) then holds the reason this implies.
  - On MikoPBX 2026.1 a module switched off by a user has an empty reason; it is reported as V(user).
  - The marketplace check can take up to the PBX's own limit (three tries of 15 seconds on the PBX side); when
    the PBX's API worker gives up first, the marketplace is reported as V(unreachable).
  - Remediation succeeds when the company's licence has a free feature for the module (for example after a
    licence renewal or after a seat was freed in the licence cabinet), B(or) when MikoPBX can start the product's
    one-time trial; the PBX's capture request adds that trial by itself when no paid licence is available. It
    does not buy or extend licences.
  - Whether a capture started a trial is not reported per module. The licence information names products but
    not their ids, so a module cannot be matched to its product reliably, and the PBX caches the licence
    information for 120 seconds, so a read right after the capture may not show the new trial yet. Read
    RV(mikopbx.marketplace.mikopbx_license_info#module:products[].trial) a few minutes after remediation.
seealso:
  - module: mikopbx.marketplace.mikopbx_license_info
  - module: mikopbx.marketplace.mikopbx_reachability
"""

EXAMPLES = r"""
- name: Report modules switched off for lack of a licence
  mikopbx.marketplace.mikopbx_module_check:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    ca_path: "{{ mikopbx_ca_path }}"
  register: modules

- name: Show the licence problems
  ansible.builtin.debug:
    msg: "{{ modules.licence_problems | map(attribute='uniqid') | list }}"

- name: Fail when a module the site needs is not usable, or any module lost its licence
  mikopbx.marketplace.mikopbx_module_check:
    url: "{{ mikopbx_url }}"
    username: admin
    password: "{{ mikopbx_password }}"
    validate_certs: false
    required:
      - ModuleUsersUI
      - ModuleBackup
    fail_on:
      - required
      - licence

- name: After renewing the licence, try once to bring licence-disabled modules back
  mikopbx.marketplace.mikopbx_module_check:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    ca_path: "{{ mikopbx_ca_path }}"
    remediate: true
  register: remediation

- name: Select disabled modules that need attention (not those a person switched off)
  mikopbx.marketplace.mikopbx_module_check:
    url: "{{ mikopbx_url }}"
    api_key: "{{ mikopbx_api_key }}"
    validate_certs: false
    check_marketplace: false
    query: "[?!enabled && disable_reason!='user'].{id: uniqid, why: disable_reason, text: disable_reason_text}"
  register: attention
"""

RETURN = r"""
modules:
  description: Every installed module, sorted by id, after remediation (if any).
  returned: success
  type: list
  elements: dict
  contains:
    uniqid:
      description: Module id.
      type: str
      sample: ModuleUsersUI
    name:
      description: Module name as the PBX shows it.
      type: str
      sample: Users and access rights
    version:
      description: Installed version.
      type: str
      sample: 1.2.3
    enabled:
      description: Whether the module is enabled.
      type: bool
      sample: false
    disable_reason:
      description:
        - Why the module is disabled; V(null) for an enabled module.
        - V(licence), V(user), V(exception), V(crash_loop), or V(other) for a reason this collection does not
          know.
      type: str
      sample: licence
    disable_reason_raw:
      description:
        - The reason stored by MikoPBX (C(DisabledByLicense) …), also for an enabled module whose reason is
          stale; V(null) when empty. On MikoPBX 2024.1 the reason implied by the page's icons.
      type: str
      sample: DisabledByLicense
    disable_reason_text:
      description: The PBX's text for the reason (for a licence problem, the licensing error), or V(null).
      type: str
      sample: "License expired (2011)"
    licence_problem:
      description: True when the module is disabled B(and) its reason is C(DisabledByLicense).
      type: bool
      sample: true
summary:
  description: Counts of modules per state; C(disabled_by_*) count only disabled modules.
  returned: success
  type: dict
  sample:
    total: 6
    enabled: 2
    disabled: 4
    licence_problems: 1
    disabled_by_licence: 1
    disabled_by_user: 1
    disabled_by_exception: 1
    disabled_by_crash_loop: 1
    disabled_by_other: 0
licence_problems:
  description: The modules disabled for lack of a licence (the crossed-out key).
  returned: success
  type: list
  elements: dict
  sample:
    - uniqid: ModuleUsersUI
      name: Users and access rights
      disable_reason_text: "License expired (2011)"
required_problems:
  description: Every O(required) module that is not installed, not enabled or not licensed.
  returned: success
  type: list
  elements: dict
  sample:
    - uniqid: ModuleBackup
      problem: not_installed
      message: ModuleBackup is not installed
selected:
  description: The value of O(query) over RV(modules); V(null) without O(query).
  returned: success
  type: raw
  sample: [ModuleUsersUI]
marketplace:
  description:
    - Whether the PBX reaches the module marketplace.
    - C(status) is V(ok), V(unreachable) (the PBX could not connect, resolve or got no answer in time),
      V(upstream_error) (the marketplace answered with an error) or V(skipped) (O(check_marketplace=false)).
  returned: success
  type: dict
  sample:
    status: unreachable
    message: "Could not resolve host: releases.mikopbx.com"
    modules_available: null
remediation:
  description:
    - One entry per licence-disabled module when O(remediate=true), else an empty list.
    - C(result) is V(enabled), V(licence_unavailable) (the licence is still not available; nothing else was
      tried), V(failed) (the PBX refused for another reason) or V(skipped_check_mode).
    - C(captured) is V(true) when the PBX captured the module's licence feature. MikoPBX may have started the
      product's one-time trial to do so (see O(remediate)); C(message) then says so.
  returned: success
  type: list
  elements: dict
  sample:
    - uniqid: ModuleUsersUI
      attempted: true
      captured: false
      result: licence_unavailable
      message: "the licence is still unavailable: License expired (2011); the module was left disabled"
generation:
  description: The API generation of the PBX, V(v3) (2026.1) or V(legacy) (2024.1).
  returned: success
  type: str
  sample: v3
msg:
  description: One sentence about the findings.
  returned: always
  type: str
  sample: "6 modules, 4 disabled, 1 disabled for lack of a licence (ModuleUsersUI)"
diff:
  description: The modules whose state remediation changed (or would try to change in check mode).
  returned: with O(remediate=true) and C(--diff) when a remediation was attempted or planned
  type: dict
  sample:
    before:
      modules:
        ModuleUsersUI:
          enabled: false
          disable_reason: licence
    after:
      modules:
        ModuleUsersUI:
          enabled: true
          disable_reason: null
error:
  description: Details of a failure to talk to the PBX (masked), with the classification and the fix.
  returned: when the PBX could not be read
  type: dict
  sample:
    classification: auth
"""

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mikopbx.marketplace.plugins.module_utils import common
from ansible_collections.mikopbx.marketplace.plugins.module_utils import modules_state as ms
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError

try:
    import jmespath

    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
except ImportError:
    jmespath = None
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = traceback.format_exc()

# captureFeatureForProductId adds the product's trial when the capture fails, so every successful
# capture may have used up the company's one trial of that product.
TRIAL_NOTE = (
    "if the company had no paid licence for it, MikoPBX started the product's one-time trial: check the products "
    "with mikopbx_license_info"
)

# HTTP statuses of the PBX that mean "the PBX itself refused", not "the marketplace failed".
_PBX_REFUSALS = (401, 403)


def argument_spec() -> dict[str, Any]:
    spec = common.connection_argument_spec()
    spec.update(
        required=dict(type="list", elements="str", default=[]),
        query=dict(type="str"),
        remediate=dict(type="bool", default=False),
        fail_on=dict(type="list", elements="str", default=["required"], choices=list(ms.FAIL_ON_CHOICES)),
        check_marketplace=dict(type="bool", default=True),
    )
    return spec


class ModuleChecker:
    """Read the module table, check the marketplace, remediate once, shape the result."""

    def __init__(self, module: AnsibleModule, client: Any) -> None:
        self.module = module
        self.client = client
        self.params = module.params

    # -- reading ---------------------------------------------------------------------------------
    def read_modules(self) -> list[dict[str, Any]]:
        return ms.read_modules(self.client, self.module.warn)

    def reread_modules(self) -> list[dict[str, Any]]:
        # The legacy page is cached by the client (it also holds the settings): drop it first.
        self.client.invalidate_settings()
        return self.read_modules()

    def check_marketplace(self) -> dict[str, Any]:
        if not self.params["check_marketplace"]:
            return {"status": "skipped", "message": "not checked (check_marketplace: false)", "modules_available": None}

        # Not repeated by the client: when the releases server is unreachable the PBX spends its whole
        # worker wait on it, and repeating would only multiply that.
        try:
            result = self.client.call("modules.getAvailableModules", allow_failure=True, safe=False)
        except MikoPBXError as err:
            if err.classification != "timeout":
                raise
            return {
                "status": "unreachable",
                "message": "the PBX did not answer the marketplace check in time (%s)" % err.message,
                "modules_available": None,
            }
        if result.ok:
            return ms.marketplace_status_from_answer(True, result.data, result.messages)
        if result.status in _PBX_REFUSALS:
            raise self.client.error_from_result(result, "modules.getAvailableModules", method="GET")

        err = self.client.error_from_result(result, "modules.getAvailableModules", method="GET")
        if err.classification == "timeout" or err.classification.startswith("licence:"):
            return {
                "status": "unreachable",
                "message": "the PBX got no answer from the marketplace in time (%s)" % (err.pbx_message or err.message),
                "modules_available": None,
            }
        if err.classification in ("not_found", "unsupported"):
            return {"status": "upstream_error", "message": err.describe(), "modules_available": None}
        return ms.marketplace_status_from_answer(False, result.data, result.error_text() or result.all_text())

    # -- remediation -----------------------------------------------------------------------------
    def remediate(self, candidates: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool, bool]:
        """One attempt per licence-disabled module. Returns (entries, changed, wrote_anything)."""
        entries = []
        changed = False
        wrote = False
        for module in candidates:
            if self.module.check_mode:
                entries.append(
                    {
                        "uniqid": module["uniqid"],
                        "attempted": False,
                        "captured": False,
                        "result": "skipped_check_mode",
                        "message": "check mode: would try once to capture the licence feature and enable the "
                        "module; without a paid licence MikoPBX would start the product's one-time trial for it",
                    }
                )
                continue
            try:
                entry, module_changed = self.remediate_one(module)
            except MikoPBXError as err:
                if err.classification in ("auth", "tls", "unreachable", "rate_limited"):
                    raise
                # A write that timed out is not repeated: the re-read below shows where it ended.
                entry = {
                    "uniqid": module["uniqid"],
                    "attempted": True,
                    "captured": False,
                    "result": "failed",
                    "message": "the PBX did not complete the attempt: %s" % err.message,
                }
                module_changed = False
            entries.append(entry)
            changed = changed or module_changed
            wrote = True
        return entries, changed, wrote

    def remediate_one(self, module: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        uniqid = module["uniqid"]
        entry: dict[str, Any] = {"uniqid": uniqid, "attempted": True, "captured": False, "result": "", "message": ""}

        feature_id, product_id = self.licence_ids(uniqid)
        if feature_id and product_id:
            capture = self.client.call(
                "license.captureFeatureForProductId",
                data={"licFeatureId": feature_id, "licProductId": product_id},
                allow_failure=True,
            )
            if capture.ok:
                entry["captured"] = True
            elif capture.messages.get("license") or capture.licence_code is not None:
                entry["result"] = "licence_unavailable"
                entry["message"] = "the licence is still unavailable: %s; the module was left disabled" % (
                    capture.error_text() or "the licensing service refused the feature"
                )
                return entry, False

        enable = self.client.call("modules.enable", path_id=uniqid, allow_failure=True)
        if enable.ok:
            entry["result"] = "enabled"
            entry["message"] = "enabled%s" % (
                " after capturing its licence feature (%s)" % TRIAL_NOTE if entry["captured"] else ""
            )
            return entry, True

        text = enable.error_text() or enable.all_text()
        if enable.messages.get("license") or enable.licence_code is not None:
            entry["result"] = "licence_unavailable"
            entry["message"] = "the licence is still unavailable: %s; the module was left disabled" % (
                text or "the PBX refused to enable it for licensing"
            )
        else:
            entry["result"] = "failed"
            entry["message"] = "the PBX did not enable the module%s" % ((": " + text) if text else "")
        if entry["captured"]:
            entry["message"] += "; its licence feature was captured (%s)" % TRIAL_NOTE
        # A captured feature is a change even when enabling failed.
        return entry, entry["captured"]

    def licence_ids(self, uniqid: str) -> tuple[int | None, int | None]:
        """The module's licence feature and product from the marketplace; (None, None) when unknown."""
        try:
            info = self.client.call("modules.getModuleInfo", path_id=uniqid, allow_failure=True)
        except MikoPBXError as err:
            if err.classification in ("auth", "tls", "unreachable", "rate_limited"):
                raise
            return None, None
        if not info.ok:
            return None, None
        data = info.data
        if isinstance(data, list) and data and isinstance(data[0], dict):
            data = data[0]
        return ms.licence_ids(data)

    @staticmethod
    def reconcile(entries: list[dict[str, Any]], modules: list[dict[str, Any]]) -> bool:
        """Trust the re-read over an attempt whose answer was lost; True if a module came back."""
        enabled = {m["uniqid"] for m in modules if m["enabled"]}
        came_back = False
        for entry in entries:
            if entry["uniqid"] in enabled:
                came_back = True
                if entry["result"] != "enabled":
                    entry["message"] += "; the module is enabled now"
                    entry["result"] = "enabled"
        return came_back

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        modules = self.read_modules()
        marketplace = self.check_marketplace()

        remediation: list[dict[str, Any]] = []
        changed = False
        diff = None
        if self.params["remediate"]:
            candidates = ms.remediation_candidates(modules)
            remediation, changed, wrote = self.remediate(candidates)
            if self.module.check_mode:
                changed = bool(candidates)
                diff = module_diff(candidates, [dict(m, enabled=True, disable_reason=None) for m in candidates])
            elif wrote:
                modules = self.reread_modules()
                changed = self.reconcile(remediation, modules) or changed
                diff = module_diff(candidates, modules)

        required = ms.required_problems(modules, self.params["required"])
        selected = None
        if self.params["query"]:
            selected = jmespath.search(self.params["query"], modules)

        result = {
            "changed": changed,
            "generation": self.client.generation,
            "modules": modules,
            "summary": ms.summarise(modules),
            "licence_problems": ms.licence_problems(modules),
            "required_problems": required,
            "selected": selected,
            "marketplace": marketplace,
            "remediation": remediation,
        }
        if diff is not None and self.module._diff:
            result["diff"] = diff
        result["msg"] = self.message(result)
        return result

    @staticmethod
    def message(result: dict[str, Any]) -> str:
        summary = result["summary"]
        text = "%d modules, %d disabled" % (summary["total"], summary["disabled"])
        problems = [p["uniqid"] for p in result["licence_problems"]]
        if problems:
            text += ", %d disabled for lack of a licence (%s)" % (len(problems), ", ".join(problems))
        else:
            text += ", none disabled for lack of a licence"
        done = [e["uniqid"] for e in result["remediation"] if e["result"] == "enabled"]
        if done:
            text += "; re-enabled: %s" % ", ".join(done)
        captured = [e["uniqid"] for e in result["remediation"] if e.get("captured")]
        if captured:
            text += (
                "; licence feature captured for %s (MikoPBX starts a product's one-time trial when no paid "
                "licence is available)" % ", ".join(captured)
            )
        planned = [e["uniqid"] for e in result["remediation"] if e["result"] == "skipped_check_mode"]
        if planned:
            text += (
                "; check mode: would try to bring back %s (capturing the licence feature may start the "
                "product's one-time trial)" % ", ".join(planned)
            )
        if result["marketplace"]["status"] not in ("ok", "skipped"):
            text += "; marketplace %s" % result["marketplace"]["status"]
        return text


def module_diff(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """Enabled state and disable reason of the modules whose state differs (only changed keys)."""
    now = {m["uniqid"]: m for m in after}
    diff: dict[str, Any] = {"before": {"modules": {}}, "after": {"modules": {}}}
    for module in before:
        later = now.get(module["uniqid"])
        if later is None:
            continue
        for key in ("enabled", "disable_reason"):
            if module[key] != later[key]:
                diff["before"]["modules"].setdefault(module["uniqid"], {})[key] = module[key]
                diff["after"]["modules"].setdefault(module["uniqid"], {})[key] = later[key]
    return diff


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        **common.connection_module_kwargs(),
    )
    common.check_connection_options(module)

    # Everything that can be checked locally is checked before the first request.
    if module.params["query"]:
        if not HAS_JMESPATH:
            module.fail_json(msg=missing_required_lib("jmespath"), exception=JMESPATH_IMPORT_ERROR)
        try:
            jmespath.compile(module.params["query"])
        except jmespath.exceptions.JMESPathError as exc:
            module.fail_json(msg="query is not a valid JMESPath expression: %s (nothing was sent to the PBX)" % exc)

    client = common.client_from_module(module)
    checker = ModuleChecker(module, client)
    try:
        result = checker.run()
    except MikoPBXError as err:
        common.fail_from_error(module, err, "read the installed modules", client=client)

    reasons = ms.failures(
        result["modules"], result["required_problems"], result["marketplace"], module.params["fail_on"]
    )
    if reasons:
        result["msg"] = "%s: %s" % (result["msg"], "; ".join(reasons))
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
