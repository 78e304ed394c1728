"""Unit tests of the Jinja test ``mikopbx.marketplace.license_key``."""

from __future__ import annotations

import pytest

# The module, not its TestModule class: pytest would collect a class named Test* as tests.
from ansible_collections.mikopbx.marketplace.plugins.test import license_key as plugin

license_key = plugin.license_key


@pytest.mark.parametrize(
    "value",
    ["MIKO-AB12C-DE34F-GH56I-JK78L", "miko-ab12c-de34f-gh56i-jk78l", " MIKO-AB12C - DE34F-GH56I-JK78L\n"],
    ids=["canonical", "lower-case", "spaces"],
)
def test_keys_as_typed_are_keys(value):
    assert license_key(value) is True


@pytest.mark.parametrize(
    "value",
    [
        "MIKO-AB12C-DE34F-GH56I",  # a group cut off
        "MIKO-AB12C-DE34F-GH56I-JK78",  # a character short
        "MIKOUPD-AB12C-DE34F-GH56I-JK78L",  # a coupon
        "MIKO-AB12C-DE34F-GH56I-JK78L-XXXXX",
        "MIKO_AB12C_DE34F_GH56I_JK78L",
        "",
        None,
        12345,
    ],
    ids=["cut-group", "short", "coupon", "extra-group", "underscores", "empty", "none", "number"],
)
def test_other_values_are_not(value):
    assert license_key(value) is False


def test_registered_under_its_name():
    assert plugin.TestModule().tests() == {"license_key": license_key}
