# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that normalise and mask MikoPBX licence keys and coupons.

The documentation of each filter is in the sidecar file ``<filter name>.yml`` next to this file.
"""

from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError

# A key is MIKO- plus four groups of five; a coupon is MIKOUPD- plus four groups of five.
_VALUE_RE = re.compile(r"^(MIKO|MIKOUPD)-([A-Z0-9]{5})-([A-Z0-9]{5})-([A-Z0-9]{5})-([A-Z0-9]{5})$")
_ANYWHERE_RE = re.compile(r"\bMIKO(?:UPD)?-[A-Za-z0-9]{5}(?:-[A-Za-z0-9]{5}){2}-[A-Za-z0-9]{5}\b", re.IGNORECASE)
_HIDDEN_GROUP = "*****"


def normalize_license_key(value: Any) -> str:
    """Upper-case a key or coupon and drop every whitespace character; empty input gives ``''``.

    Keys are compared in this form, which is also the form MikoPBX stores. Validation is a
    separate step: a value that does not look like a key is returned normalised, not rejected.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AnsibleFilterError("normalize_license_key expects a string, got %s" % type(value).__name__)
    return re.sub(r"\s+", "", value).upper()


def mask_license_key(value: Any, keep: int = 1) -> str:
    """Show a key or coupon with all groups but the last ``keep`` (0-4) hidden.

    ``MIKO-AAAAA-BBBBB-CCCCC-DDDDD`` becomes ``MIKO-*****-*****-*****-DDDDD``. A value that is not
    a well-formed key is never echoed: it becomes ``********`` (an empty value stays empty).
    """
    if not isinstance(keep, int) or isinstance(keep, bool) or not 0 <= keep <= 4:
        raise AnsibleFilterError("mask_license_key: keep must be an integer from 0 to 4")
    key = normalize_license_key(value)
    if not key:
        return ""

    match = _VALUE_RE.match(key)
    if not match:
        return "********"

    prefix, groups = match.group(1), list(match.groups()[1:])
    shown = [_HIDDEN_GROUP] * (4 - keep) + groups[4 - keep :]
    return "-".join([prefix] + shown)


def mask_license_keys_in_text(value: Any) -> str:
    """Mask every key or coupon found anywhere in a text (for messages that may quote one)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return _ANYWHERE_RE.sub(lambda m: mask_license_key(m.group(0)), text)


class FilterModule:
    """Licence key masking filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "mask_license_key": mask_license_key,
            "mask_license_keys_in_text": mask_license_keys_in_text,
            "normalize_license_key": normalize_license_key,
        }
