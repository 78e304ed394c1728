# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja test ``mikopbx.marketplace.license_key``: is a value shaped like a MikoPBX licence key.

It applies the rule the modules apply (module_utils ``licence``), so a play can refuse a mistyped
key before any request with the same verdict a module would give. Documentation: ``license_key.yml``.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.mikopbx.marketplace.plugins.module_utils.licence import is_valid_license_key


def license_key(value: Any) -> bool:
    """True for ``MIKO-`` and four groups of five letters or digits, ignoring whitespace and case."""
    if not isinstance(value, str):
        return False
    return is_valid_license_key(value)


class TestModule:
    """Licence key tests."""

    def tests(self) -> dict[str, Any]:
        return {"license_key": license_key}
