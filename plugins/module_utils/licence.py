# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Licence-key domain logic: normalisation, validation, masking, licenseInfo parsing, error codes.

Everything above the ``# Client-facing helpers`` line is pure (no HTTP) and unit-tested directly.
The helpers below it take a :class:`MikoPBXClient` and smooth over the generation quirks of the
licence API.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError

if TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.mikopbx.marketplace.plugins.module_utils.api import MikoPBXClient

KEY_PREFIX = "MIKO-"
COUPON_PREFIX = "MIKOUPD-"
KEY_RE = re.compile(r"^MIKO-[A-Z0-9]{5}(-[A-Z0-9]{5}){3}$")
COUPON_RE = re.compile(r"^MIKOUPD-[A-Z0-9]{5}(-[A-Z0-9]{5}){3}$")
GROUP_LEN = 5
GROUPS = 4

MIKOPBX_PRODUCT_NAME = "MikoPBX"
MIKOPBX_PRODUCT_ID = "11"
BASE_FEATURE_NAME = "MikoPBX base"
BASE_FEATURE_ID = "33"
HOST_LIMIT = 10

LICENSING_HOSTS_HINT = (
    "the PBX cannot reach the licensing service: check that the PBX itself (not the controller) can resolve "
    "and reach lic.mikopbx.com and releases.mikopbx.com on TCP 443 (firewall, DNS, default gateway, "
    "TLS-inspecting proxy); mikopbx_reachability shows the failing stage"
)


@dataclass(frozen=True)
class LicenceCode:
    """One licence-library error: what it means and what the operator should do."""

    code: int | str
    meaning: str
    hint: str
    classification: str


# Numbered codes come from the licensing server; the string entries are the connectivity
# conditions the library reports without a number.
LICENCE_CODES: dict[int | str, LicenceCode] = {
    2008: LicenceCode(
        2008,
        "no free seat for this machine: the licence is missing or bound to a different MikoPBX",
        "free a seat for this PBX in the licence cabinet (release the old or dead host), or bind the key again "
        "with mikopbx_license_binding",
        "licence:2008",
    ),
    2009: LicenceCode(
        2009,
        "the licence key is invalid",
        "the key is wrong: check license_key against the key mailed for your company",
        "licence:2009",
    ),
    2011: LicenceCode(
        2011,
        "the licence of this feature/module has expired (the crossed-out key)",
        "the module licence is unavailable: renew it with MIKO sales or apply an upgrade coupon",
        "licence:2011",
    ),
    2022: LicenceCode(
        2022,
        "a key for a different company was already issued to this e-mail",
        "reuse the licence key mailed earlier to this e-mail (pass license_key), or correct company_name",
        "licence:2022",
    ),
    2026: LicenceCode(
        2026,
        "the licensing service does not know this licence key",
        "the key is wrong: check license_key for typos against the key mailed for your company",
        "licence:2026",
    ),
    2037: LicenceCode(
        2037,
        "the key given with the coupon is wrong",
        "apply the coupon together with the company's licence key",
        "licence:2037",
    ),
    2040: LicenceCode(2040, "no such coupon", "check the coupon value", "licence:2040"),
    2041: LicenceCode(
        2041, "the coupon has already been used", "remove the coupon option; it was applied before", "licence:2041"
    ),
    2057: LicenceCode(2057, "the coupon is blocked", "contact MIKO sales about this coupon", "licence:2057"),
    2051: LicenceCode(
        2051,
        "this machine was already registered with another e-mail",
        "reuse the licence key from the earlier registration of this PBX (pass license_key)",
        "licence:2051",
    ),
    "no_answer": LicenceCode("no_answer", "the licensing service gave no answer", LICENSING_HOSTS_HINT, "unreachable"),
    "dns": LicenceCode("dns", "the PBX cannot resolve the licensing server name", LICENSING_HOSTS_HINT, "unreachable"),
    "tls": LicenceCode(
        "tls",
        "the PBX's TLS connection to the licensing server was not trusted (certificate problem)",
        "a TLS-inspecting proxy or firewall probably intercepts the PBX's HTTPS: exempt lic.mikopbx.com and "
        "releases.mikopbx.com from inspection; mikopbx_reachability shows the tls stage",
        "unreachable",
    ),
    "upstream": LicenceCode(
        "upstream",
        "the licensing server answered with a server error",
        "the licensing service is failing: retry later; if it persists for all PBXs, contact MIKO",
        "unreachable",
    ),
    "no_pbx_response": LicenceCode(
        "no_pbx_response",
        "the PBX did not answer the licence request",
        "check that the PBX's API workers are running, then retry",
        "server",
    ),
}

_CODE_RE = re.compile(
    r"(?:^|[\s(\[#:\"'])(20\d\d)(?=\s*[:)\];,]|\.(?:\s|$)|\s+[-\u2013]\s|\s*$)"
    r"|(?:code|error|ошибка)\s*[#:=]?\s*(20\d\d)\b",
    re.IGNORECASE,
)

# Wording of the licence messages as MikoPBX translates them (English), reduced to patterns.
_TEXT_PATTERNS: list[tuple[int | str, re.Pattern]] = [
    (2008, re.compile(r"(bound|linked|attached|tied)\s+to\s+(a\s+|an\s+)?(different|another)", re.I)),
    (2008, re.compile(r"(failed|unable)\s+to\s+capture\s+(the\s+)?feature", re.I)),
    (2022, re.compile(r"e-?mail.*(different|another)\s+company|(different|another)\s+company.*e-?mail", re.I)),
    (2051, re.compile(r"(machine|pbx|computer|station).*registered.*(another|different)\s+e-?mail", re.I)),
    (
        2037,
        re.compile(
            r"coupon.*(key|registration)\s+number.*(wrong|incorrect|invalid)"
            r"|(registration|licen[cs]e)?\s*(key|number).*coupon.*\b(wrong|incorrect|invalid)",
            re.I,
        ),
    ),
    (2040, re.compile(r"(no\s+such\s+coupon|coupon.*(not\s+found|does\s+not\s+exist))", re.I)),
    (2041, re.compile(r"coupon.*already\s+(been\s+)?(used|activated)", re.I)),
    (2057, re.compile(r"coupon.*blocked", re.I)),
    (2011, re.compile(r"licen[cs]e.*(has\s+)?expired|expired.*licen[cs]e", re.I)),
    (2026, re.compile(r"licen[cs]e\s+key\s+number\s+is\s+(wrong|incorrect|invalid)", re.I)),
    (2009, re.compile(r"invalid\s+licen[cs]e\s+key|licen[cs]e\s+key\s+(error|is\s+(invalid|blocked))", re.I)),
    ("tls", re.compile(r"ssl\s+certificate\s+problem|certificate\s+(verify\s+failed|problem)|\bssl\b.*\berror", re.I)),
    ("upstream", re.compile(r"^\s*5\d\d:\s")),
    ("dns", re.compile(r"(host\s*lookup|resolve|name\s+resolution|dns)", re.I)),
    (
        "no_answer",
        re.compile(
            r"(no\s+answer|not\s+answer|did\s+not\s+respond|no\s+response|internet|unreachable|"
            r"connection\s+(refused|timed\s+out)|licensing\s+server.*(unavailable|down))",
            re.I,
        ),
    ),
]


def licence_code_info(code: int | str | None) -> LicenceCode | None:
    """The table entry of a licence code, or None."""
    if code is None:
        return None
    return LICENCE_CODES.get(code)


def extract_licence_code(text: str | None) -> int | str | None:
    """Find the licence-library condition in an error text.

    Returns a numbered code (``2008``) when the text carries one ("2008: …", "(2008)", "code 2008",
    or a known translated message); for the licensing service's connectivity ``"no_answer"``,
    ``"dns"``, ``"tls"`` or ``"upstream"`` (a raw ``5xx: …`` library error); else None.
    """
    if not text:
        return None
    for match in _CODE_RE.finditer(text):
        number = int(match.group(1) or match.group(2))
        if number in LICENCE_CODES:
            return number
    for code, pattern in _TEXT_PATTERNS:
        if pattern.search(text):
            return code
    return None


def licence_error(
    code: int | str | None, message: str, *, classification: str | None = None, **kwargs: Any
) -> MikoPBXError:
    """A MikoPBXError for a licence condition, with the table's meaning and fix."""
    info = licence_code_info(code)
    if info is None:
        return MikoPBXError(message, classification or "server", **kwargs)
    numbered = code if isinstance(code, int) else None
    kwargs.setdefault("hint", info.hint)
    return MikoPBXError(message, classification or info.classification, licence_code=numbered, **kwargs)


# --------------------------------------------------------------------------------------------
# Keys and coupons


def _compact(value: Any) -> str:
    if value is None:
        return ""
    return "".join(str(value).split()).upper()


def _describe_groups(value: str, prefix: str, kind: str, option: str) -> str:
    """Explain why a compacted value is not a well-formed key/coupon, without quoting it."""
    length = len(prefix) + GROUPS * GROUP_LEN + GROUPS - 1
    fix = (
        "pass the %s exactly as issued: %r followed by %d groups of %d Latin letters or digits "
        "joined by '-' (%d characters)" % (option, prefix, GROUPS, GROUP_LEN, length)
    )
    if not value:
        return "%s is empty; %s" % (kind, fix)
    if not value.startswith(prefix):
        return "%s must start with %r; %s" % (kind, prefix, fix)
    groups = value[len(prefix) :].split("-")
    if len(groups) != GROUPS:
        return "%s must have %d groups of %d characters after %r, found %d; %s" % (
            kind,
            GROUPS,
            GROUP_LEN,
            prefix,
            len(groups),
            fix,
        )
    for index, group in enumerate(groups, start=1):
        bad = [c for c in group if not ("A" <= c <= "Z" or "0" <= c <= "9")]
        if bad:
            return "%s group %d contains a character that is not a Latin letter or digit; %s" % (kind, index, fix)
        if len(group) != GROUP_LEN:
            diff = GROUP_LEN - len(group)
            if diff > 0:
                what = "one character short" if diff == 1 else "%d characters short" % diff
            else:
                what = "one character too long" if diff == -1 else "%d characters too long" % -diff
            return "%s is %s in group %d; %s" % (kind, what, index, fix)
    return "%s is malformed; %s" % (kind, fix)


def normalize_license_key(value: Any) -> str:
    """Strip all whitespace and upper-case a licence key (no validation)."""
    return _compact(value)


def validate_license_key(value: Any, option: str = "license_key") -> str:
    """Normalise and validate a licence key; raise ``invalid_input`` with the exact problem."""
    key = _compact(value)
    if KEY_RE.match(key):
        return key
    raise MikoPBXError(
        "%s is not a valid MikoPBX licence key: %s" % (option, _describe_groups(key, KEY_PREFIX, "the key", option)),
        "invalid_input",
        hint="correct the key (a typo or a cut-off group); a malformed key is never sent, since the PBX would "
        "take it as a new trial registration",
        secrets={key, str(value)} if value else None,
    )


def normalize_coupon(value: Any) -> str:
    return _compact(value)


def validate_coupon(value: Any, option: str = "coupon") -> str:
    """Normalise and validate an upgrade coupon (``MIKOUPD-`` + 4 groups of 5)."""
    coupon = _compact(value)
    if COUPON_RE.match(coupon):
        return coupon
    raise MikoPBXError(
        "%s is not a valid MikoPBX coupon: %s"
        % (option, _describe_groups(coupon, COUPON_PREFIX, "the coupon", option)),
        "invalid_input",
        hint="check the coupon value",
        secrets={coupon, str(value)} if value else None,
    )


def is_valid_license_key(value: Any) -> bool:
    return bool(KEY_RE.match(_compact(value)))


def mask_license_key(value: Any) -> str | None:
    """``MIKO-*****-*****-*****-DDDDD`` for a valid key; anything else is masked completely.

    Empty/None → None (no key). Masking a malformed string must not reveal any part of it.
    """
    if value is None:
        return None
    compact = _compact(value)
    if not compact:
        return None
    if KEY_RE.match(compact):
        return KEY_PREFIX + "*****-*****-*****-" + compact[-GROUP_LEN:]
    if COUPON_RE.match(compact):
        return COUPON_PREFIX + "*****-*****-*****-" + compact[-GROUP_LEN:]
    return "*****"


# --------------------------------------------------------------------------------------------
# licenseInfo


def _as_list(node: Any) -> list:
    """A child element that occurs once is an object, several times an array; absent → []."""
    if node is None or node == "" or node == []:
        return []
    if isinstance(node, list):
        return [n for n in node if n is not None]
    return [node]


def _attrs(node: Any) -> dict[str, Any]:
    """Attributes of an element; tolerate items without ``@attributes`` (flat dicts)."""
    if not isinstance(node, dict):
        return {}
    attrs = node.get("@attributes")
    if isinstance(attrs, dict):
        return attrs
    return {k: v for k, v in node.items() if not isinstance(v, (dict, list))}


def _to_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _to_bool(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def _parse_date(value: Any) -> datetime.date | None:
    if not value:
        return None
    text = str(value).strip()[:10]
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def parse_feature(node: Any) -> dict[str, Any]:
    attrs = _attrs(node)
    count = _to_int(attrs.get("count"))
    captured = _to_int(attrs.get("captured"))
    free = None if count is None else max(count - (captured or 0), 0)
    return {
        "name": attrs.get("name"),
        "id": attrs.get("id"),
        "count": count,
        "counteach": _to_int(attrs.get("counteach")),
        "captured": captured,
        "free": free,
    }


def parse_product(node: Any, today: datetime.date | None = None) -> dict[str, Any]:
    today = today or datetime.date.today()
    attrs = _attrs(node)
    expired_raw = attrs.get("expired") or ""
    expires = _parse_date(expired_raw)
    trial = _to_bool(attrs.get("trial"))

    # The licence tab shows a product as expired when its date is past, or when it is a trial
    # without any date.
    if expires is not None:
        expired_now = expires < today
        expires_in_days: int | None = (expires - today).days
    else:
        expired_now = trial
        expires_in_days = None

    features = [parse_feature(f) for f in _as_list(node.get("feature") if isinstance(node, dict) else None)]
    return {
        "name": attrs.get("name"),
        "id": attrs.get("id"),
        "expired": expired_raw or None,
        "trial": trial,
        "expired_now": expired_now,
        "expires_in_days": expires_in_days,
        "features": features,
    }


def parse_license_info(raw: Any, today: datetime.date | None = None) -> dict[str, Any]:
    """Turn ``data.licenseInfo`` (a JSON string, or already decoded) into a clean structure.

    Returns ``{"key", "owner": {companyname, contact, email, tel}, "products": [...]}``; raises
    ``MikoPBXError`` (classification ``server``) when the value is missing or not licence info.
    """
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        if not raw.strip():
            raise MikoPBXError(
                "the PBX returned empty licence information",
                "server",
                hint="retry later; if it persists, check the PBX's licence service",
            )
        try:
            raw = json.loads(raw)
        except ValueError:
            raise MikoPBXError(
                "the PBX returned licence information that is not JSON",
                "server",
                pbx_message=raw[:200],
                hint="check the MikoPBX version; this answer is not understood",
            ) from None
    if not isinstance(raw, dict):
        raise MikoPBXError(
            "the PBX returned no licence information (got %s)" % type(raw).__name__,
            "server",
            hint="check the MikoPBX version; this answer is not understood",
        )

    root = _attrs(raw)
    products = [parse_product(p, today) for p in _as_list(raw.get("product"))]
    if not root and not products:
        raise MikoPBXError(
            "the licence information of the PBX has neither owner nor products",
            "server",
            hint="check the MikoPBX version; this answer is not understood",
        )
    return {
        "key": root.get("key") or None,
        "owner": {k: root.get(k) or None for k in ("companyname", "contact", "email", "tel")},
        "products": products,
    }


def find_base_feature(products: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The seat-counting feature: "MikoPBX base" (id 33), else the MikoPBX product's first feature."""
    for product in products:
        for feature in product.get("features", []):
            if feature.get("name") == BASE_FEATURE_NAME or feature.get("id") == BASE_FEATURE_ID:
                return feature
    for product in products:
        if product.get("name") == MIKOPBX_PRODUCT_NAME or product.get("id") == MIKOPBX_PRODUCT_ID:
            if product.get("features"):
                return product["features"][0]
    return None


def seat_figures(products: list[dict[str, Any]]) -> dict[str, Any]:
    """``{count, captured, free, host_limit}`` of the base feature (None figures when unknown)."""
    feature = find_base_feature(products)
    if feature is None:
        return {"count": None, "captured": None, "free": None, "host_limit": HOST_LIMIT}
    return {
        "count": feature.get("count"),
        "captured": feature.get("captured"),
        "free": feature.get("free"),
        "host_limit": HOST_LIMIT,
    }


# --------------------------------------------------------------------------------------------
# Client-facing helpers (generation quirks of the licence API)


def read_license_info(
    client: MikoPBXClient, today: datetime.date | None = None, *, legacy_feature_check: bool = False
) -> dict[str, Any]:
    """GET getLicenseInfo and parse it. Licence-library failures raise classified MikoPBXError.

    ``legacy_feature_check``: on a legacy PBX whose getLicenseInfo failed without any message,
    ask getMikoPBXFeatureStatus (one more read) and raise its classified error instead (2008 for a
    machine without a seat, unreachable when the licensing service is silent).
    """
    result = client.call("license.getLicenseInfo", allow_failure=True)
    if not result.ok:
        # Legacy answers a licence-library failure with result false and no message at all; its
        # base-feature check (feature 33) says why: 2008 for a machine without a seat, or no answer.
        if legacy_feature_check and client.generation == "legacy" and not result.error_text():
            status = client.call("license.getMikoPBXFeatureStatus", allow_failure=True)
            if not status.ok and status.error_text():
                raise client.error_from_result(status, "license.getLicenseInfo")
        raise client.error_from_result(result, "license.getLicenseInfo")
    data = result.data if isinstance(result.data, dict) else {}
    return parse_license_info(data.get("licenseInfo"), today)


def apply_key(client: MikoPBXClient, key: str, coupon: str | None = None) -> dict[str, Any]:
    """Apply a licence key (and optional coupon) with processUserRequest.

    The key (and coupon) are validated locally first: a malformed key would silently become a
    trial registration on the PBX. Returns ``{"stored_key", "same_key", "coupon_applied", "messages"}``.
    Legacy answers "result false, no messages" when the key is already stored: not a failure.
    """
    key = validate_license_key(key)
    client.add_secret(key)
    payload: dict[str, Any] = {"licKey": key}
    if coupon:
        coupon = validate_coupon(coupon)
        client.add_secret(coupon)
        payload["coupon"] = coupon

    result = client.call("license.processUserRequest", data=payload, allow_failure=True)
    messages = result.messages
    has_messages = any(messages.get(k) for k in ("error", "license", "info", "warning"))

    if not result.ok and not has_messages and result.status in (None, 200):
        return {"stored_key": key, "same_key": True, "coupon_applied": False, "messages": messages}

    if not result.ok:
        key_accepted = bool(messages.get("info")) and bool(coupon)
        err = client.error_from_result(result, "license.processUserRequest")
        if key_accepted and err.licence_code is None:
            err.hint = "the key was applied but the coupon failed; " + (err.hint or "check the coupon")
        raise err

    stored = None
    if isinstance(result.data, dict):
        stored = result.data.get("PBXLicense")
    return {
        "stored_key": _compact(stored) or key,
        "same_key": False,
        "coupon_applied": bool(coupon),
        "messages": messages,
    }


TRIAL_FIELDS = {
    "company_name": "companyname",
    "email": "email",
    "contact_name": "contact",
    "phone": "telefone",
    "tax_id": "inn",
}


def register_trial(client: MikoPBXClient, company: dict[str, Any]) -> str:
    """Trial registration (no key): returns the new key. ``company`` uses the module option names
    (``company_name``, ``email``, ``contact_name``, ``phone``, ``tax_id``) or the PBX field names."""
    payload: dict[str, Any] = {}
    for option, field in TRIAL_FIELDS.items():
        value = company.get(option, company.get(field))
        if value not in (None, ""):
            payload[field] = str(value)
    missing = [o for o, f in TRIAL_FIELDS.items() if f in ("companyname", "email", "contact") and f not in payload]
    if missing:
        raise MikoPBXError(
            "trial registration needs %s" % ", ".join(missing),
            "invalid_input",
            hint="pass company_name, email and contact_name (or a license_key)",
        )

    result = client.call("license.processUserRequest", data=payload)
    key = _compact(result.data.get("PBXLicense") if isinstance(result.data, dict) else None)
    if not KEY_RE.match(key):
        raise MikoPBXError(
            "trial registration answered without a licence key",
            "server",
            method="POST",
            status=result.status,
            url=client.url,
            hint="read the licence state with mikopbx_license_info before retrying; never register twice",
        )
    client.add_secret(key)
    return key


def reset_key(client: MikoPBXClient) -> None:
    """``resetKey`` (a GET that releases the seat and empties PBXLicense). Never retried."""
    client.call("license.resetKey")
