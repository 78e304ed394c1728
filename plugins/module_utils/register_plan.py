# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Registration planning for ``mikopbx_register``: desired state, plan, diff, and failure meaning.

Everything here is free of HTTP so it can be unit-tested directly:

* :func:`desired_from_params` validates and normalises the task's input *before* any request
  (a malformed key must never reach ``processUserRequest``: the PBX would treat it as a trial
  registration and issue a brand-new company key);
* :func:`plan_registration` compares the desired state with the key stored on the PBX and decides
  the single write (if any) and its diff;
* :func:`explain_licence_failure` turns a failed ``processUserRequest`` answer into a licence code,
  a kind (``invalid_key``, ``coupon``, ``trial_conflict``, ``seat_shortage``, ``unreachable``) and
  the operator's fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.mikopbx.marketplace.plugins.module_utils import licence
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError

KEY_PATTERN = licence.KEY_RE
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TAX_ID_PATTERN = re.compile(r"^[0-9]{10,12}$")
# What the v3 input sanitiser would turn into an integer (sign and leading zeros are lost).
NUMERIC_STRING = re.compile(r"^[+-]?[0-9]+(?:\.[0-9]+)?$")

ACTION_NONE = "none"
ACTION_APPLIED_KEY = "applied_key"
ACTION_REPLACED_KEY = "replaced_key"
ACTION_REGISTERED_TRIAL = "registered_trial"
ACTION_APPLIED_COUPON = "applied_coupon"

TRIAL_PLACEHOLDER = "(new key issued by the trial registration)"


class RegisterInputError(MikoPBXError):
    """The task's input is wrong; raised before anything is sent to the PBX."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, "invalid_input", hint=hint or "correct the task's options; nothing was sent")


class RegisterRefused(ValueError):
    """The requested change is refused by policy (e.g. replacing a different key without force)."""


# --- keys ---------------------------------------------------------------------------------------


def mask_key(key: str | None) -> str:
    """``MIKO-*****-*****-*****-DDDDD`` for a well-formed key, ``""`` for none, fully masked otherwise."""
    return licence.mask_license_key(key) or ""


# --- desired state ------------------------------------------------------------------------------


@dataclass
class DesiredRegistration:
    """What the task asks for, validated and normalised; holds secrets, never log it."""

    license_key: str | None = None
    coupon: str | None = None
    trial: dict[str, str] = field(default_factory=dict)
    force: bool = False

    @property
    def wants_key(self) -> bool:
        return self.license_key is not None

    def __repr__(self) -> str:  # secrets must not leak through a traceback or a debug print
        return "DesiredRegistration(license_key=%r, coupon=%s, trial=%s, force=%r)" % (
            mask_key(self.license_key),
            "set" if self.coupon else "unset",
            sorted(self.trial),
            self.force,
        )


def _clean_text(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    value = str(value).strip()
    return value


def desired_from_params(params: dict[str, Any]) -> DesiredRegistration:
    """Validate the module parameters; raises :class:`RegisterInputError` before any request."""
    desired = DesiredRegistration(force=bool(params.get("force")))

    if params.get("coupon") is not None and params.get("license_key") is None:
        raise RegisterInputError(
            "coupon needs license_key: a coupon upgrades a licence key and is activated together with it",
            hint="give the company licence key in license_key as well (a trial registration takes no coupon); "
            "nothing was sent",
        )

    if params.get("license_key") is not None:
        desired.license_key = licence.validate_license_key(params["license_key"])
    if params.get("coupon") is not None:
        desired.coupon = licence.validate_coupon(params["coupon"])

    company = _clean_text(params, "company_name")
    email = _clean_text(params, "email")
    contact = _clean_text(params, "contact_name")
    phone = _clean_text(params, "phone")
    tax_id = _clean_text(params, "tax_id")
    if company is None and email is None and contact is None:
        if phone or tax_id:
            raise RegisterInputError("phone and tax_id are only used for a trial registration (with company_name)")
        if desired.license_key is None:
            raise RegisterInputError(
                "give license_key, or company_name, email and contact_name for a trial registration"
            )
        return desired

    missing = [n for n, v in (("company_name", company), ("email", email), ("contact_name", contact)) if not v]
    if missing:
        raise RegisterInputError(
            "a trial registration needs company_name, email and contact_name; empty or missing: %s" % ", ".join(missing)
        )
    if not EMAIL_PATTERN.match(email or ""):
        raise RegisterInputError("email does not look like an e-mail address (expected name@domain.tld)")
    if tax_id and not TAX_ID_PATTERN.match(tax_id):
        raise RegisterInputError(
            "tax_id must be 10 to 12 digits (the rule of the PBX's own registration form); got %d characters"
            % len(tax_id)
        )

    # Field names are those of the PBX's registration form (LicensingGetKeyForm).
    desired.trial = {"companyname": company or "", "email": email or "", "contact": contact or ""}
    if phone:
        desired.trial["telefone"] = phone
    if tax_id:
        desired.trial["inn"] = tax_id
    return desired


def sanitiser_warnings(trial: dict[str, str], generation: str) -> list[str]:
    """Warn about values the v3 input sanitiser converts to integers (a leading + or 0 is lost)."""
    if generation != "v3":
        return []
    warnings = []
    labels = {"telefone": "phone", "inn": "tax_id"}
    for name, label in labels.items():
        value = trial.get(name)
        if value and NUMERIC_STRING.match(value) and (value[0] in "+-0" or "." in value):
            warnings.append(
                "%s is a plain number with a leading sign or zero: MikoPBX 2026.1 converts numeric strings "
                "to integers before registration, so the licensing service receives it without the leading "
                "character. Write a phone with spaces or dashes (e.g. '+7 900 000-00-00') to keep it as text." % label
            )
    return warnings


# --- plan ---------------------------------------------------------------------------------------


@dataclass
class RegisterPlan:
    """The one write (or none) that brings the PBX to the desired registration."""

    action: str
    stored_key: str
    target_key: str | None  # None: a trial registration, the new key is not known in advance
    body: dict[str, str] | None = None  # processUserRequest body: contains secrets
    msg: str = ""
    warnings: list[str] = field(default_factory=list)
    sends_coupon: bool = False

    @property
    def changed(self) -> bool:
        return self.action != ACTION_NONE

    @property
    def registered_before(self) -> bool:
        return bool(self.stored_key)

    def diff(self) -> dict[str, dict[str, Any]]:
        """before/after with only the changed keys, keys masked."""
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        if self.action in (ACTION_APPLIED_KEY, ACTION_REPLACED_KEY, ACTION_REGISTERED_TRIAL):
            before["license_key"] = mask_key(self.stored_key)
            after["license_key"] = mask_key(self.target_key) if self.target_key else TRIAL_PLACEHOLDER
            if not self.registered_before:
                before["registered"] = False
                after["registered"] = True
        if self.sends_coupon and self.body:
            before["coupon"] = ""
            after["coupon"] = mask_key(self.body.get("coupon", ""))
        return {"before": before, "after": after}

    def __repr__(self) -> str:
        return "RegisterPlan(action=%r, stored=%r, target=%r)" % (
            self.action,
            mask_key(self.stored_key),
            mask_key(self.target_key),
        )


def plan_registration(desired: DesiredRegistration, stored_key: str | None) -> RegisterPlan:
    """Decide the write. Raises :class:`RegisterRefused` when policy forbids the change."""
    stored = (stored_key or "").strip()
    stored_ok = bool(KEY_PATTERN.match(stored))

    if not desired.wants_key:
        return _plan_trial(desired, stored)

    key = desired.license_key or ""
    body = {"licKey": key}
    if stored == key:
        if desired.coupon and desired.force:
            body["coupon"] = desired.coupon
            return RegisterPlan(
                ACTION_APPLIED_COUPON,
                stored,
                key,
                body=body,
                sends_coupon=True,
                msg="the PBX already holds licence key %s; the coupon is applied to it (force: true)" % mask_key(key),
            )
        plan = RegisterPlan(ACTION_NONE, stored, key, msg="the PBX already holds licence key %s" % mask_key(key))
        if desired.coupon:
            plan.warnings.append(
                "coupon not applied: the PBX already holds this key and MikoPBX cannot tell whether the coupon was "
                "activated before. Set force: true to activate the coupon now (once; a used coupon fails with "
                "licence code 2041)."
            )
        return plan

    if desired.coupon:
        body["coupon"] = desired.coupon

    if not stored:
        return RegisterPlan(
            ACTION_APPLIED_KEY,
            stored,
            key,
            body=body,
            sends_coupon=bool(desired.coupon),
            msg="licence key %s applied" % mask_key(key),
        )

    if stored_ok and not desired.force:
        same_tail = mask_key(stored) == mask_key(key)
        raise RegisterRefused(
            "the PBX already holds licence key %s and the task asks for %s%s; refusing to replace a "
            "different key. If this PBX really belongs under the new key, set force: true (release the old "
            "key's seat first with mikopbx.marketplace.mikopbx_license_binding state: absent, or in the licence "
            "cabinet); otherwise correct license_key."
            % (mask_key(stored), mask_key(key), " (they differ in the masked groups)" if same_tail else "")
        )

    plan = RegisterPlan(
        ACTION_REPLACED_KEY,
        stored,
        key,
        body=body,
        sends_coupon=bool(desired.coupon),
        msg="licence key %s replaced by %s" % (mask_key(stored), mask_key(key)),
    )
    if not stored_ok:
        plan.warnings.append("the PBX stored a malformed licence key (%d characters); it is replaced" % len(stored))
    return plan


def _plan_trial(desired: DesiredRegistration, stored: str) -> RegisterPlan:
    if stored:
        # Never a second registration: a company has one key, and a PBX that holds any key is registered.
        return RegisterPlan(
            ACTION_NONE,
            stored,
            stored,
            msg=(
                "the PBX already holds licence key %s; no trial registration was made (a PBX is registered "
                "once; pass license_key to move it to another key)" % mask_key(stored)
            ),
        )
    return RegisterPlan(
        ACTION_REGISTERED_TRIAL,
        stored,
        None,
        body=dict(desired.trial),
        msg="trial registration for company %r made; the PBX now holds a new licence key"
        % desired.trial["companyname"],
    )


# --- failure meaning ----------------------------------------------------------------------------

KIND_INVALID_KEY = "invalid_key"
KIND_SEAT_SHORTAGE = "seat_shortage"
KIND_COUPON = "coupon"
KIND_TRIAL_CONFLICT = "trial_conflict"
KIND_EXPIRED = "expired"
KIND_UNREACHABLE = "unreachable"
KIND_UNKNOWN = "unknown"

LICENCE_CODES: dict[int, tuple[str, str, str]] = {
    # code: (kind, meaning, fix)
    2026: (
        KIND_INVALID_KEY,
        "the licensing service does not know this licence key",
        "check license_key against the licence e-mail or the licence cabinet (a typo in any group gives this "
        "answer); the key stored on the PBX was not changed",
    ),
    2009: (
        KIND_INVALID_KEY,
        "the licensing service rejects this licence key as invalid or blocked",
        "check license_key, or ask the vendor why the key is blocked; the key stored on the PBX was not changed",
    ),
    2008: (
        KIND_SEAT_SHORTAGE,
        "every seat of this key is held by other machines, or the licence is bound to another PBX",
        "free a seat in the licence cabinet (or release one with mikopbx.marketplace.mikopbx_license_binding), "
        "then run again",
    ),
    2011: (KIND_EXPIRED, "the licence has expired", "contact the vendor's sales department to extend it"),
    2037: (
        KIND_COUPON,
        "the coupon does not belong to this licence key",
        "check that coupon and license_key were issued together",
    ),
    2040: (KIND_COUPON, "the licensing service knows no such coupon", "check coupon for typos"),
    2041: (
        KIND_COUPON,
        "the coupon has already been used",
        "remove coupon from the task (a coupon is activated once; it may have been activated by an earlier run)",
    ),
    2057: (KIND_COUPON, "the coupon is blocked", "contact the vendor about the coupon"),
    2022: (
        KIND_TRIAL_CONFLICT,
        "a key for a different company was already issued to this e-mail address",
        "reuse the licence key mailed earlier (pass it as license_key) or correct company_name; do not retry "
        "with altered details, that would create another company",
    ),
    2051: (
        KIND_TRIAL_CONFLICT,
        "this machine was already registered with another e-mail address",
        "reuse the licence key issued earlier for this machine (pass it as license_key); do not retry with "
        "altered details",
    ),
}

UNREACHABLE_FIX = (
    "the PBX could not reach the licensing service: allow outbound HTTPS (TCP 443) from the PBX to "
    "lic.mikopbx.com, check the PBX's DNS servers and default gateway "
    "(mikopbx.marketplace.mikopbx_reachability names the failing stage), then run again"
)

# Translated licence texts carry no code; these phrases identify them. Order matters: coupon
# phrases are tried first when a coupon was sent, "blocked" means the coupon then.
_TEXT_RULES: list[tuple[int, re.Pattern[str]]] = [
    (
        2037,
        re.compile(r"coupon.*(registration|key).*(wrong|invalid)|(registration|key).*coupon.*(wrong|invalid)", re.I),
    ),
    (2040, re.compile(r"no such coupon|coupon (was )?not found|unknown coupon", re.I)),
    (2041, re.compile(r"coupon.*(already|used)", re.I)),
    (2057, re.compile(r"coupon.*block", re.I)),
    (2022, re.compile(r"(different|another|other) company", re.I)),
    (2051, re.compile(r"(another|different|other) e-?mail", re.I)),
    (2008, re.compile(r"bound to (a )?(different|another)|licen[cs]e is missing|capture", re.I)),
    (2011, re.compile(r"expired", re.I)),
    (2026, re.compile(r"key (number )?is wrong|key.*not found|wrong.*key|unknown.*key", re.I)),
    (2009, re.compile(r"invalid|blocked", re.I)),
]
_UNREACHABLE_TEXT = re.compile(
    r"did not answer|no answer|not answer|internet|lookup|dns|resolve|connect|timed? ?out|unreachable|"
    r"network|gnats|no response|service unavailable",
    re.I,
)
_RAW_CODE = re.compile(r"^\s*(\d{1,4})\s*:")
_ANY_CODE = re.compile(r"\b(20[0-9]{2})\b")


@dataclass
class LicenceFailure:
    code: int | None
    kind: str
    meaning: str
    fix: str
    text: str

    @property
    def classification(self) -> str:
        if self.kind == KIND_UNREACHABLE:
            return "unreachable"
        return "licence:%s" % self.code if self.code else "server"


def _texts(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        order = ("license", "error", "warning", "info")
        out: list[str] = []
        for name in order:
            value = messages.get(name)
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, list):
                out.extend(str(v) for v in value)
        return out
    if isinstance(messages, list):
        return [str(v) for v in messages]
    if isinstance(messages, str):
        return [messages]
    return []


def licence_failure_texts(messages: Any) -> list[str]:
    """The failure texts of an answer: ``license`` and ``error`` (not the success ``info``)."""
    if isinstance(messages, dict):
        return _texts({"license": messages.get("license"), "error": messages.get("error")})
    return _texts(messages)


def explain_licence_failure(
    messages: Any, status: int | None, *, sent_coupon: bool = False, code: int | None = None
) -> LicenceFailure:
    """Name the licence code, its meaning and the fix for a failed ``processUserRequest``."""
    texts = licence_failure_texts(messages)
    text = " | ".join(t for t in texts if t)

    if code is None:
        code = _code_from_texts(texts, sent_coupon)
    if code is not None and code in LICENCE_CODES:
        kind, meaning, fix = LICENCE_CODES[code]
        return LicenceFailure(code, kind, meaning, fix, text)

    # No code: library code 0 (the local licence service is silent) or a connectivity text.
    if code == 0 or status in (502, 503) or (text and _UNREACHABLE_TEXT.search(text)):
        return LicenceFailure(
            None, KIND_UNREACHABLE, "the PBX could not reach the licensing service", UNREACHABLE_FIX, text
        )
    if not text:
        return LicenceFailure(
            None,
            KIND_UNKNOWN,
            "the PBX refused the request without any message",
            "look at the PBX's system log; run the task again with -vvv to see the HTTP status",
            text,
        )
    return LicenceFailure(
        code, KIND_UNKNOWN, "the licensing service refused the request", "read the PBX's message above", text
    )


def _code_from_texts(texts: list[str], sent_coupon: bool) -> int | None:
    """A licence code from the texts; 0 for the library's connectivity conditions (no number)."""
    for text in texts:
        raw = _RAW_CODE.match(text)
        if raw:
            return int(raw.group(1))
        shared = licence.extract_licence_code(text)
        if isinstance(shared, int) and (sent_coupon or LICENCE_CODES.get(shared, ("",))[0] != KIND_COUPON):
            return shared
        found = _ANY_CODE.search(text)
        if found and int(found.group(1)) in LICENCE_CODES:
            return int(found.group(1))
    # The shared table does not know every wording; these rules cover the rest.
    for text in texts:
        for code, pattern in _TEXT_RULES:
            if LICENCE_CODES[code][0] == KIND_COUPON and not sent_coupon:
                continue
            if pattern.search(text):
                return code
    for text in texts:
        if licence.extract_licence_code(text) in ("dns", "no_answer"):
            return 0
    return None
