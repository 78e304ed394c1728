"""Unit tests of the licence key masking filters."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.mikopbx.marketplace.plugins.filter.mask import (
    FilterModule,
    mask_license_key,
    mask_license_keys_in_text,
    normalize_license_key,
)

KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"


def test_filters_are_registered():
    assert set(FilterModule().filters()) == {"mask_license_key", "mask_license_keys_in_text", "normalize_license_key"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (KEY, "MIKO-*****-*****-*****-DDDDD"),
        (" miko-aaaaa-bbbbb-ccccc-ddddd\n", "MIKO-*****-*****-*****-DDDDD"),
        ("MIKOUPD-AAAAA-BBBBB-CCCCC-12345", "MIKOUPD-*****-*****-*****-12345"),
        ("MIKO-AAAAA-BBBBB-CCCCC-DDDD", "********"),
        ("not a key", "********"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_license_key(value, expected):
    assert mask_license_key(value) == expected


def test_mask_never_reveals_a_malformed_value():
    assert "AAAAA" not in mask_license_key("MIKO-AAAAA-BBBBB-CCCCC")


@pytest.mark.parametrize(
    ("keep", "expected"), [(0, "MIKO-*****-*****-*****-*****"), (2, "MIKO-*****-*****-CCCCC-DDDDD")]
)
def test_mask_keep(keep, expected):
    assert mask_license_key(KEY, keep=keep) == expected


@pytest.mark.parametrize("keep", [-1, 5, "1", True])
def test_mask_keep_rejected(keep):
    with pytest.raises(AnsibleFilterError):
        mask_license_key(KEY, keep=keep)


def test_normalize():
    assert normalize_license_key(" miko-aaaaa-\tbbbbb-ccccc-ddddd \n") == KEY
    assert normalize_license_key(None) == ""
    with pytest.raises(AnsibleFilterError):
        normalize_license_key(42)


def test_mask_in_text():
    text = "key %s was rejected; coupon mikoupd-aaaaa-bbbbb-ccccc-99999 too" % KEY
    masked = mask_license_keys_in_text(text)
    assert KEY not in masked and "AAAAA" not in masked.upper()
    assert "MIKO-*****-*****-*****-DDDDD" in masked and "MIKOUPD-*****-*****-*****-99999" in masked
