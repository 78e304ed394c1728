"""Licence domain logic: keys, coupons, masking, licenseInfo parsing, seats, error codes."""

from __future__ import annotations

import datetime
import json

import pytest

from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError
from ansible_collections.mikopbx.marketplace.plugins.module_utils.licence import (
    HOST_LIMIT,
    LICENCE_CODES,
    extract_licence_code,
    is_valid_license_key,
    licence_error,
    mask_license_key,
    normalize_license_key,
    parse_license_info,
    seat_figures,
    validate_coupon,
    validate_license_key,
)

KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"
TODAY = datetime.date(2026, 6, 1)


# ------------------------------------------------------------------ FC-05 normalisation


@pytest.mark.parametrize(
    "raw",
    [
        " miko-aaaaa-bbbbb-ccccc-ddddd\n",
        "MIKO-AAAAA-BBBBB-CCCCC-DDDDD",
        "\tMIKO-AAAAA- BBBBB-CCCCC-ddddd  ",
        "miko-aaaaa-bbbbb-ccccc-ddddd\r\n",
    ],
)
def test_fc05_key_is_normalised(raw):
    assert normalize_license_key(raw) == KEY
    assert validate_license_key(raw) == KEY
    assert is_valid_license_key(raw)


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("MIKO-AAAAA-BBBBB-CCCCC-DDDD", "one character short in group 4"),
        ("MIKO-AAAA-BBBBB-CCCCC-DDDDD", "one character short in group 1"),
        ("MIKO-AAAAA-BBBBB-CCCCC-DDDDDD", "one character too long in group 4"),
        ("MIKO-AAAAA-BBBBB-CCCCC", "found 3"),
        ("MIKOUPD-AAAAA-BBBBB-CCCCC-DDDDD", "must start with 'MIKO-'"),
        ("", "empty"),
        (None, "empty"),
        ("MIKO-AAAAA-BBBBB-CC_CC-DDDDD", "group 3 contains a character"),
        ("MIKO-ААААА-BBBBB-CCCCC-DDDDD", "group 1 contains a character"),  # Cyrillic look-alikes
    ],
)
def test_fc05_malformed_key_names_the_problem_without_leaking_it(raw, problem):
    with pytest.raises(MikoPBXError) as info:
        validate_license_key(raw)
    err = info.value
    assert err.classification == "invalid_input"
    assert problem in str(err)
    assert "license_key" in str(err)
    if raw:
        assert normalize_license_key(raw) not in str(err)
        assert "BBBBB" not in str(err)


def test_coupon_validation():
    assert validate_coupon(" mikoupd-aaaaa-bbbbb-ccccc-ddddd ") == "MIKOUPD-AAAAA-BBBBB-CCCCC-DDDDD"
    with pytest.raises(MikoPBXError, match="one character short in group 2"):
        validate_coupon("MIKOUPD-AAAAA-BBBB-CCCCC-DDDDD")


@pytest.mark.parametrize(
    "raw, masked",
    [
        (KEY, "MIKO-*****-*****-*****-DDDDD"),
        (" miko-aaaaa-bbbbb-ccccc-ddddd\n", "MIKO-*****-*****-*****-DDDDD"),
        ("MIKOUPD-AAAAA-BBBBB-CCCCC-EEEEE", "MIKOUPD-*****-*****-*****-EEEEE"),
        ("MIKO-AAAAA-BBBBB-CCCCC-DDDD", "*****"),
        ("not a key at all", "*****"),
        ("", None),
        (None, None),
    ],
)
def test_masking(raw, masked):
    assert mask_license_key(raw) == masked


# ------------------------------------------------------------------ licenseInfo


def _info(products, attrs=None):
    root = {
        "@attributes": attrs
        or {
            "key": KEY,
            "companyname": "Example LLC",
            "contact": "Jane Doe",
            "email": "admin@example.com",
            "tel": "+10000000000",
        }
    }
    if products is not None:
        root["product"] = products
    return root


BASE = {"@attributes": {"name": "MikoPBX base", "count": "10", "counteach": "1", "captured": "4"}}


def test_parse_reference_example_string():
    raw = json.dumps(
        _info(
            [
                {"@attributes": {"name": "MikoPBX", "expired": "", "trial": "0"}, "feature": BASE},
                {
                    "@attributes": {"name": "Module Example", "expired": "2026-12-31", "trial": "1"},
                    "feature": [
                        {"@attributes": {"name": "Feature A", "count": "5", "counteach": "1", "captured": "2"}},
                        {"@attributes": {"name": "Feature B", "count": "1", "counteach": "0", "captured": "0"}},
                    ],
                },
            ]
        )
    )
    info = parse_license_info(raw, today=TODAY)
    assert info["key"] == KEY
    assert info["owner"] == {
        "companyname": "Example LLC",
        "contact": "Jane Doe",
        "email": "admin@example.com",
        "tel": "+10000000000",
    }
    mikopbx, module = info["products"]
    assert mikopbx["name"] == "MikoPBX" and mikopbx["expired"] is None and mikopbx["expired_now"] is False
    assert mikopbx["features"][0] == {
        "name": "MikoPBX base",
        "id": None,
        "count": 10,
        "counteach": 1,
        "captured": 4,
        "free": 6,
    }
    assert module["trial"] is True
    assert module["expires_in_days"] == (datetime.date(2026, 12, 31) - TODAY).days
    assert [f["name"] for f in module["features"]] == ["Feature A", "Feature B"]
    assert seat_figures(info["products"]) == {"count": 10, "captured": 4, "free": 6, "host_limit": HOST_LIMIT}


def test_single_product_object_and_already_decoded():
    info = parse_license_info(_info({"@attributes": {"name": "MikoPBX"}, "feature": BASE}), today=TODAY)
    assert len(info["products"]) == 1
    assert info["products"][0]["features"][0]["captured"] == 4


def test_items_without_attributes_are_tolerated():
    info = parse_license_info(
        _info(
            [
                {
                    "name": "MikoPBX",
                    "expired": "2020-01-01",
                    "trial": "0",
                    "feature": {"name": "MikoPBX base", "count": "2", "captured": "2"},
                }
            ]
        ),
        today=TODAY,
    )
    product = info["products"][0]
    assert product["expired_now"] is True
    assert product["expires_in_days"] < 0
    assert seat_figures(info["products"])["free"] == 0


def test_trial_without_date_counts_as_expired():
    info = parse_license_info(_info({"@attributes": {"name": "X", "expired": "", "trial": "1"}}), today=TODAY)
    assert info["products"][0]["expired_now"] is True
    assert info["products"][0]["features"] == []


def test_no_products_keeps_owner_and_unknown_seats():
    info = parse_license_info(_info(None), today=TODAY)
    assert info["products"] == []
    assert seat_figures([]) == {"count": None, "captured": None, "free": None, "host_limit": HOST_LIMIT}


def test_seats_fall_back_to_mikopbx_product_feature():
    products = parse_license_info(
        _info(
            {
                "@attributes": {"name": "MikoPBX"},
                "feature": {"@attributes": {"name": "Basis", "count": "3", "captured": "1"}},
            }
        ),
        today=TODAY,
    )["products"]
    assert seat_figures(products)["count"] == 3


def test_garbage_counts_do_not_crash():
    info = parse_license_info(
        _info(
            {"@attributes": {"name": "MikoPBX"}, "feature": {"@attributes": {"name": "MikoPBX base", "count": "many"}}}
        )
    )
    assert info["products"][0]["features"][0]["count"] is None


@pytest.mark.parametrize("raw", [None, "", "   ", "not json", "[1, 2]", "{}", 42])
def test_missing_or_garbage_licence_info_is_a_clear_error(raw):
    with pytest.raises(MikoPBXError) as info:
        parse_license_info(raw)
    assert "licence information" in str(info.value)


def test_garbage_text_is_not_echoed_with_a_key():
    with pytest.raises(MikoPBXError) as info:
        parse_license_info("<xml key='MIKO-AAAAA-BBBBB-CCCCC-DDDDD'>")
    assert "BBBBB" not in str(info.value)


# ------------------------------------------------------------------ licence codes


@pytest.mark.parametrize(
    "code", [2008, 2009, 2011, 2022, 2026, 2037, 2040, 2041, 2051, 2057, "no_answer", "dns", "tls", "upstream"]
)
def test_every_code_has_meaning_and_fix(code):
    entry = LICENCE_CODES[code]
    assert entry.meaning and entry.hint


@pytest.mark.parametrize(
    "text, code",
    [
        ("2008: feature capture failed", 2008),
        ("Error 2026", 2026),
        ("Licence error (2009)", 2009),
        ("code=2011", 2011),
        ("The coupon has already been used", 2041),
        ("No such coupon", 2040),
        ("This coupon is blocked", 2057),
        ("A key for a different company was already issued to this e-mail", 2022),
        ("The license of the module has expired", 2011),
        # English paraphrases of the translated licence messages (no code in the text)
        ("The licence key number is wrong. Check the key and try again", 2026),
        ("The licence key is invalid or has been blocked", 2009),
        ("The required licence is missing, or it is bound to a different MikoPBX station", 2008),
        ("The licence for this module has expired. Please contact the sales department", 2011),
        ("The registration key given together with the coupon is wrong", 2037),
        ("There is no such coupon", 2040),
        ("This coupon has already been used", 2041),
        ("This station was already registered with another e-mail address. Use the key issued earlier", 2051),
        ("The licensing server did not answer. Check the Internet connection settings of the station", "no_answer"),
        ("Cannot reach the licensing server: host name lookup failed (check DNS)", "dns"),
        ("The licensing subsystem returned no answer", "no_answer"),
        ("0: No answer from the local licence service", "no_answer"),
        ("2009: License key is blocked", 2009),
        ("0: Could not resolve host: lic.mikopbx.com", "dns"),
        ("0: Connection timed out: lic.mikopbx.com:443", "no_answer"),
        ("0: SSL certificate problem: self-signed certificate in certificate chain", "tls"),
        ("503: Service Unavailable", "upstream"),
        ("Service temporarily unavailable, please retry later", None),
        ("Request timeout or worker not responding", None),
        ("Version 2026.1.223", None),
        ("valid until 2026-12-31", None),
        ("", None),
        ("1999: unrelated", None),
    ],
)
def test_extract_licence_code(text, code):
    assert extract_licence_code(text) == code


def test_licence_error_carries_code_and_hint():
    err = licence_error(2008, "seat", status=422)
    assert err.classification == "licence:2008"
    assert err.licence_code == 2008
    assert "licence cabinet" in err.hint
    unreachable = licence_error("no_answer", "no answer")
    assert unreachable.classification == "unreachable"
    assert unreachable.licence_code is None
    assert "443" in unreachable.hint
