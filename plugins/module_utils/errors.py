# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One exception type for everything that can go wrong while talking to a MikoPBX.

The classification tells callers *what kind* of failure happened (so a fleet report can group
hosts), the hint tells the operator *what to do*. Nothing in here may ever print a secret: the
exception keeps a reference to the secrets its client has learnt and masks them, plus anything that
looks like a licence key or coupon, whenever it is rendered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

CLASSIFICATIONS = (
    "auth",
    "tls",
    "unreachable",
    "timeout",
    "rate_limited",
    "licence",  # always rendered as licence:<code>
    "invalid_input",
    "not_found",
    "unsupported",
    "server",
)

# A licence key or coupon anywhere in a text is masked even when nobody registered it as a
# secret (e.g. a key echoed back inside an error message of the PBX).
_KEY_RE = re.compile(r"\bMIKO(?:UPD)?-[A-Za-z0-9]{5}(?:-[A-Za-z0-9]{5}){2}-([A-Za-z0-9]{1,5})", re.IGNORECASE)
_BEARER_RE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_COOKIE_RE = re.compile(r"((?:PHPSESSID|refreshToken)=)[^;\s,'\"]+", re.IGNORECASE)

MASK = "********"

DEFAULT_HINTS = {
    "auth": (
        "check api_key, or username and password, for this PBX (the PBX bans addresses after repeated failed logins)"
    ),
    "tls": (
        "the PBX certificate could not be verified: set ca_path to the PBX's CA or certificate, "
        "or validate_certs: false for a self-signed certificate"
    ),
    "unreachable": "check that the controller can reach the PBX URL (address, port, firewall)",
    "timeout": "the PBX did not answer in time: raise timeout, or retry when the PBX is less busy",
    "rate_limited": (
        "the PBX rate limit or login limit was hit: wait a few minutes, lower forks/throttle for this play"
    ),
    "invalid_input": "check the values passed to the module",
    "not_found": "the PBX does not know this endpoint: check url and api_generation",
    "unsupported": "this operation is not available in this MikoPBX generation/version",
    "server": "the PBX reported an internal error: check its system log, then retry",
}


def _mask_key(match: re.Match) -> str:
    """Keep the prefix and the last group, like the collection's public masking."""
    text = match.group(0)
    prefix = "MIKOUPD-" if text.upper().startswith("MIKOUPD-") else "MIKO-"
    last = match.group(1)
    if len(last) != 5:
        return prefix + "*****-*****-*****-*****"
    return prefix + "*****-*****-*****-" + last.upper()


def mask_text(text: Any, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` as a string with every known secret and every key-like value masked."""
    if text is None:
        return ""
    result = text if isinstance(text, str) else str(text)

    # Keys first, so that a known key still shows as MIKO-*****-*****-*****-DDDDD.
    result = _KEY_RE.sub(_mask_key, result)

    # Longest first so that a secret containing another one is masked as a whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= 3 and secret in result:
            result = result.replace(secret, MASK)

    result = _BEARER_RE.sub(lambda m: m.group(1) + MASK, result)
    return _COOKIE_RE.sub(lambda m: m.group(1) + MASK, result)


class MikoPBXError(Exception):
    """A failed interaction with a MikoPBX, classified, with the fix for the operator.

    ``classification`` is one of :data:`CLASSIFICATIONS`; a licence-library error is written
    ``licence:<code>`` (e.g. ``licence:2008``) and also carries ``licence_code``.
    """

    def __init__(
        self,
        message: str,
        classification: str = "server",
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        pbx_message: str | None = None,
        licence_code: int | None = None,
        url: str | None = None,
        hint: str | None = None,
        secrets: Iterable[str] | None = None,
    ) -> None:
        if licence_code is not None and classification in ("licence", "server"):
            classification = "licence:%s" % licence_code
        self.classification = classification
        self.method = method
        self.path = path
        self.status = status
        self.licence_code = licence_code
        self.url = url
        # A live reference to the client's set: secrets learnt later are masked too.
        self._secrets = secrets if secrets is not None else set()
        self._message = message
        self._pbx_message = pbx_message
        self._hint = hint if hint is not None else DEFAULT_HINTS.get(classification.split(":")[0])
        super().__init__(self.message)

    # Every public text attribute is masked on the way out.
    @property
    def message(self) -> str:
        return mask_text(self._message, self._secrets)

    @property
    def pbx_message(self) -> str | None:
        return None if self._pbx_message is None else mask_text(self._pbx_message, self._secrets)

    @property
    def hint(self) -> str | None:
        return None if self._hint is None else mask_text(self._hint, self._secrets)

    @hint.setter
    def hint(self, value: str | None) -> None:
        self._hint = value

    def attach_secrets(self, secrets: Iterable[str]) -> None:
        """Let an error raised by domain code mask the secrets of the client it is reported for."""
        self._secrets = secrets

    @property
    def is_licence_error(self) -> bool:
        return self.classification.startswith("licence:")

    def describe(self) -> str:
        """One line: cause, HTTP status, the PBX's own words and the fix."""
        parts = [self.message]
        if self.status is not None:
            parts.append("HTTP %s" % self.status)
        pbx = self.pbx_message
        if pbx and pbx not in self.message:
            parts.append("PBX said: %s" % pbx)
        if self.hint:
            parts.append("Fix: %s" % self.hint)
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` structure of a module result (masked)."""
        return {
            "classification": self.classification,
            "message": self.message,
            "status": self.status,
            "licence_code": self.licence_code,
            "pbx_message": self.pbx_message,
            "method": self.method,
            "path": self.path,
            "url": mask_text(self.url, self._secrets) if self.url else self.url,
            "hint": self.hint,
        }

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return "MikoPBXError(%r, classification=%r, status=%r)" % (self.message, self.classification, self.status)
