"""Binding domain logic: verdicts, plans, seat figures, the manual cabinet step, the diff."""

from __future__ import annotations

import json

import pytest

from ansible_collections.mikopbx.marketplace.plugins.module_utils import binding
from ansible_collections.mikopbx.marketplace.plugins.module_utils.binding import (
    APPLY_KEY,
    BINDING_REQUIRED,
    KEY_MISMATCH,
    OK,
    RESET_KEY,
    UNBOUND,
    UNKNOWN,
    LiveLicence,
)
from ansible_collections.mikopbx.marketplace.plugins.module_utils.licence import parse_license_info

KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"
OTHER = "MIKO-ZZZZZ-YYYYY-XXXXX-WWWWW"


def licence_info(count: int = 10, captured: int = 9) -> dict:
    """Decoded licenseInfo as the PBX returns it (one product object, module product with a list)."""
    return parse_license_info(
        {
            "@attributes": {"key": KEY, "companyname": "Example LLC", "email": "admin@example.com"},
            "product": [
                {
                    "@attributes": {"name": "MikoPBX", "expired": "", "trial": "0"},
                    "feature": {
                        "@attributes": {
                            "name": "MikoPBX base",
                            "count": str(count),
                            "counteach": "1",
                            "captured": str(captured),
                        }
                    },
                },
                {
                    "@attributes": {"name": "Module Example", "expired": "2099-12-31", "trial": "1"},
                    "feature": [
                        {"@attributes": {"name": "Feature A", "count": "5", "counteach": "1", "captured": "2"}},
                        {"@attributes": {"name": "Feature B", "count": "1", "counteach": "0", "captured": "1"}},
                    ],
                },
            ],
        }
    )


# ------------------------------------------------------------------------------ verdicts


@pytest.mark.parametrize(
    ("stored", "expected", "live", "status"),
    [
        ("", None, "skipped", UNBOUND),
        ("", KEY, "skipped", UNBOUND),
        (KEY, KEY, "bound", OK),
        (KEY, None, "bound", OK),
        (OTHER, KEY, "skipped", KEY_MISMATCH),
        # A foreign key stays a mismatch even if its licence info would answer.
        (OTHER, KEY, "bound", KEY_MISMATCH),
        (KEY, KEY, "not_bound", BINDING_REQUIRED),
        (KEY, None, "not_bound", BINDING_REQUIRED),
        # The key string alone never makes a host ok.
        (KEY, KEY, "unavailable", UNKNOWN),
        (KEY, KEY, "skipped", UNKNOWN),
    ],
)
def test_binding_verdict(stored, expected, live, status):
    assert binding.binding_verdict(stored, expected, LiveLicence(live)) == status


@pytest.mark.parametrize(
    ("status", "replace", "actions"),
    [
        (OK, False, []),
        (UNBOUND, False, [APPLY_KEY]),
        (BINDING_REQUIRED, False, [RESET_KEY, APPLY_KEY]),
        (KEY_MISMATCH, True, [RESET_KEY, APPLY_KEY]),
    ],
)
def test_plan_present(status, replace, actions):
    assert binding.plan_present(status, replace) == actions


@pytest.mark.parametrize("status", [KEY_MISMATCH, UNKNOWN])
def test_plan_present_refuses(status):
    with pytest.raises(ValueError):
        binding.plan_present(status, False)


def test_unknown_is_refused_even_with_replace_key():
    with pytest.raises(ValueError):
        binding.plan_present(UNKNOWN, True)


# ------------------------------------------------------------------------------ seats


def test_seat_report_from_licence_info_lists_every_feature():
    report = binding.seat_report(licence_info(10, 9), {"count": 10, "captured": 3, "holders": ["pbx-001"]})
    assert report["source"] == "licence_info"
    assert (report["count"], report["captured"], report["free"], report["host_limit"]) == (10, 9, 1, 10)
    assert report["full"] is False
    assert report["holders"] == ["pbx-001"]
    assert {(f["product"], f["feature"], f["count"], f["captured"], f["free"]) for f in report["features"]} == {
        ("MikoPBX", "MikoPBX base", 10, 9, 1),
        ("Module Example", "Feature A", 5, 2, 3),
        ("Module Example", "Feature B", 1, 1, 0),
    }


def test_seat_report_from_known_seats():
    report = binding.seat_report(None, {"count": 10, "captured": 10, "holders": ["a", "b"]})
    assert report["source"] == "known_seats"
    assert (report["free"], report["full"], report["holders"]) == (0, True, ["a", "b"])
    assert report["features"] == []


def test_seat_report_without_figures_is_none():
    assert binding.seat_report(None, None) is None
    assert binding.seat_report(None, {"holders": ["a"]}) is None


@pytest.mark.parametrize(
    ("count", "captured", "full"),
    [(10, 9, False), (10, 10, True), (10, 11, True), (3, 3, True), (3, 2, False), (20, 10, True), (None, 10, True)],
)
def test_seats_full_honours_seat_count_and_host_limit(count, captured, full):
    assert binding.seats_full({"count": count, "captured": captured}) is full


def test_seats_full_unknown_figures():
    assert binding.seats_full(None) is False
    assert binding.seats_full({"count": 10, "captured": None}) is False


def test_describe_seats():
    assert binding.describe_seats({"count": 10, "captured": 10, "free": 0}) == (
        "10 of 10 seats captured, 0 free (a key serves at most 10 hosts)"
    )
    assert "unknown" in binding.describe_seats(None)


# ------------------------------------------------------------------------------ manual cabinet step


def test_manual_step_names_the_gone_host_and_never_the_key():
    step = binding.manual_cabinet_step(KEY, target_host="pbx-011", previous_host="pbx-007", holders=["pbx-001"])
    text = repr(step)
    assert KEY not in text
    assert "AAAAA" not in text and "BBBBB" not in text and "CCCCC" not in text
    assert step["license_key_masked"] == "MIKO-*****-*****-*****-DDDDD"
    assert step["reset_seat_of"] == "pbx-007"
    assert "pbx-007" in step["instructions"] and "pbx-011" in step["instructions"]
    assert "https://lm.mikopbx.com/client-cabinet/session/index/<license key>/" in step["page"]
    assert "Marketplace" in step["page"] and "MIKO-*****-*****-*****-DDDDD" in step["page"]


def test_manual_step_with_holders_only():
    step = binding.manual_cabinet_step(KEY, target_host=None, previous_host=None, holders=["pbx-001", "pbx-002"])
    assert step["reset_seat_of"] is None
    assert "pbx-001, pbx-002" in step["instructions"]


def test_manual_step_without_any_host_still_says_where():
    step = binding.manual_cabinet_step(KEY, target_host=None, previous_host=None, holders=None)
    assert step["holders"] == []
    assert "licence cabinet" in step["instructions"]


# ------------------------------------------------------------------------------ diff


def test_diff_keeps_only_changed_keys():
    before = {"license_key": None, "binding_status": UNBOUND, "x": 1}
    after = {"license_key": "MIKO-*****-*****-*****-DDDDD", "binding_status": OK, "x": 1}
    assert binding.binding_diff(before, after) == {
        "before": {"binding_status": UNBOUND, "license_key": None},
        "after": {"binding_status": OK, "license_key": "MIKO-*****-*****-*****-DDDDD"},
    }
    assert binding.binding_diff(before, before) == {"before": {}, "after": {}}


# ------------------------------------------------------------------------------ the flow, HTTP mocked
#
# The real client, envelope parser and licence helpers run; only the HTTP adapter is faked
# (tests/unit/conftest.py). Answers are shaped like the two MikoPBX generations answer them.

from ansible_collections.mikopbx.marketplace.plugins.module_utils.api import MikoPBXClient  # noqa: E402
from ansible_collections.mikopbx.marketplace.plugins.module_utils.binding import (  # noqa: E402
    BindingFailure,
    BindingManager,
    BindingOptions,
)
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError  # noqa: E402

PBX_URL = "https://pbx.example.net"


# Bodies shaped like MikoPBX answers (reference §4, §11); replies are given to the fake transport
# of tests/unit/conftest.py as dicts of its Reply fields.


def Reply(status: int = 200, json=None, text=None) -> dict:  # noqa: N802 - reads like the conftest's Reply
    return {"status": status, "json": json, "text": text}


def v3_ok(data=None, function: str = "", messages=None) -> dict:
    return {
        "result": True,
        "data": [] if data is None else data,
        "messages": [] if messages is None else messages,
        "function": function,
        "processor": "",
        "pid": 2101,
        "meta": {"timestamp": "2026-04-10T12:00:00+00:00", "hash": "0" * 40},
    }


def v3_fail(messages, function: str = "", http_code: int | None = None) -> dict:
    body = v3_ok(None, function, messages)
    body["result"] = False
    if http_code is not None:
        body["httpCode"] = http_code
    return body


def legacy_ok(data=None, function: str = "", messages=None) -> dict:
    body = v3_ok(data, function, messages)
    body["jsonapi"] = {"version": "1.0"}
    body["pid"] = 871
    return body


def legacy_fail(messages, function: str = "") -> dict:
    body = legacy_ok(None, function, messages)
    body["result"] = False
    return body


def license_info_string(key: str = KEY, count: int = 10, captured: int = 3) -> str:
    """``data.licenseInfo``: a JSON *string* of the licence server's XML element."""
    return json.dumps(
        {
            "@attributes": {
                "key": key,
                "companyname": "Example LLC",
                "contact": "Jane Doe",
                "email": "admin@example.com",
                "tel": "+10000000000",
            },
            "product": {
                "@attributes": {"name": "MikoPBX", "expired": "", "trial": "0"},
                "feature": {
                    "@attributes": {
                        "name": "MikoPBX base",
                        "count": str(count),
                        "counteach": "1",
                        "captured": str(captured),
                    }
                },
            },
        }
    )


V3 = "/pbxcore/api/v3/"
SQL = V3 + "system:executeSqlRequest"
INFO = V3 + "license:getLicenseInfo"
RESET = V3 + "license:resetKey"
APPLY = V3 + "license:processUserRequest"
PING = V3 + "license:ping"
RAW_2008 = "2008: Failed to capture feature: no free licences, or the licence is bound to another PBX"
TR_2008 = "The required licence is missing, or it is bound to a different MikoPBX station"
RAW_NO_ANSWER = "0: No answer from the local licence service"

WRITES = {("GET", RESET), ("POST", APPLY)}


def settings_reply(key: str) -> dict:
    rows = [{"key": "PBXVersion", "value": "2026.1.223"}, {"key": "Name", "value": "PBX"}]
    if key is not None:
        rows.append({"key": "PBXLicense", "value": key})
    return v3_ok({"query": "SELECT", "database": "main", "rows": rows, "rowCount": len(rows), "affectedRows": 0})


def info_ok(key: str = KEY, count: int = 10, captured: int = 9) -> dict:
    return v3_ok({"licenseInfo": license_info_string(key, count=count, captured=captured)}, "getLicenseInfo")


def info_2008() -> Reply:
    return Reply(422, json=v3_fail([RAW_2008], "getLicenseInfo"))


def apply_ok(key: str = KEY) -> dict:
    return v3_ok({"PBXLicense": key}, "processUserRequest", {"info": ["Registration completed successfully"]})


def apply_2008() -> Reply:
    return Reply(400, json=v3_fail({"license": [TR_2008]}, "processUserRequest", http_code=400))


def v3_pbx(fake_http, stored: str | None, *info, apply=None):
    fake_http.add("POST", SQL, json=settings_reply(stored))
    for reply in info:
        fake_http.add("GET", INFO, reply if "status" in reply else Reply(json=reply))
    fake_http.add("GET", RESET, json=v3_ok([], "resetKey"))
    fake_http.add("GET", PING, json=v3_ok([], "ping"))
    if apply is not None:
        fake_http.add("POST", APPLY, apply if "status" in apply else Reply(json=apply))
    return fake_http


def manager(state: str, check_mode: bool = False, warnings: list | None = None, **options) -> BindingManager:
    client = MikoPBXClient(PBX_URL, api_key="a" * 64, retries=0)
    opts = BindingOptions(state=state, **options)
    sink = warnings if warnings is not None else []
    return BindingManager(client, opts, check_mode=check_mode, warn=sink.append)


def stored_keys(fake_http, *keys: str) -> None:
    """The stored key as successive settings reads see it (the last one repeats)."""
    fake_http.set("POST", SQL, *[Reply(json=settings_reply(key)) for key in keys])


def writes(fake_http) -> list[tuple[str, str]]:
    return [call for call in fake_http.calls() if call in WRITES]


def assert_no_key_in(value) -> None:
    text = repr(value)
    for secret in (KEY, OTHER, "AAAAA-BBBBB", "ZZZZZ-YYYYY"):
        assert secret not in text


# state: verified


def test_verified_ok_reads_only_and_reports_seats(fake_http):
    v3_pbx(fake_http, KEY, info_ok(captured=9))
    result = manager("verified", license_key=KEY).run()
    assert result["binding_status"] == OK and result["binding_status_after"] == OK
    assert result["changed"] is False
    assert result["seats"]["count"] == 10 and result["seats"]["captured"] == 9 and result["seats"]["free"] == 1
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-DDDDD"
    assert fake_http.calls() == [("POST", SQL), ("GET", INFO)]
    assert_no_key_in(result)


def test_verified_restored_onto_new_machine_is_binding_required_never_ok(fake_http):
    v3_pbx(fake_http, KEY, info_2008())
    result = manager("verified", license_key=KEY).run()
    assert result["binding_status"] == BINDING_REQUIRED
    assert result["licence_error"]["code"] == 2008
    assert writes(fake_http) == []


def test_verified_foreign_key_is_key_mismatch_without_asking_the_licence_service(fake_http):
    v3_pbx(fake_http, OTHER)
    result = manager("verified", license_key=KEY).run()
    assert result["binding_status"] == KEY_MISMATCH
    assert "WWWWW" in result["msg"] and "DDDDD" in result["msg"]
    assert fake_http.calls() == [("POST", SQL)]
    assert_no_key_in(result)


def test_verified_licensing_service_down_is_unknown_not_ok(fake_http):
    v3_pbx(fake_http, KEY, Reply(422, json=v3_fail([RAW_NO_ANSWER], "getLicenseInfo")))
    result = manager("verified", license_key=KEY).run()
    assert result["binding_status"] == UNKNOWN
    assert result["licence_error"] is not None
    assert result["seats"] is None


def test_verified_no_key_is_unbound(fake_http):
    v3_pbx(fake_http, "")
    result = manager("verified", license_key=KEY).run()
    assert result["binding_status"] == UNBOUND
    assert fake_http.calls() == [("POST", SQL)]


def test_verified_fail_on_status(fake_http):
    v3_pbx(fake_http, KEY, info_2008())
    with pytest.raises(BindingFailure) as failed:
        manager("verified", license_key=KEY, fail_on_status=[BINDING_REQUIRED]).run()
    assert failed.value.result["binding_status"] == BINDING_REQUIRED
    assert "fail_on_status" in failed.value.msg


def test_verified_pbx_unreachable_is_an_error_not_unknown(fake_http):
    import requests

    fake_http.add("POST", SQL, json=settings_reply(KEY))
    fake_http.add("GET", INFO, requests.exceptions.ConnectionError("Connection refused"))
    with pytest.raises(MikoPBXError) as failed:
        manager("verified", license_key=KEY).run()
    assert failed.value.classification == "unreachable"


# state: absent


def test_absent_releases_and_returns_masked_key(fake_http):
    v3_pbx(fake_http, KEY, info_ok())
    result = manager("absent").run()
    assert result["changed"] is True
    assert result["released_key_masked"] == "MIKO-*****-*****-*****-DDDDD"
    assert result["binding_status"] == OK and result["binding_status_after"] == UNBOUND
    assert result["license_key_masked"] is None
    assert writes(fake_http) == [("GET", RESET)]
    assert result["diff"]["after"] == {"binding_status": UNBOUND, "license_key": None}
    assert_no_key_in(result)


def test_absent_check_mode_sends_no_reset(fake_http):
    v3_pbx(fake_http, KEY, info_ok())
    result = manager("absent", check_mode=True).run()
    assert result["changed"] is True and result["actions"] == [RESET_KEY]
    assert result["released_key_masked"] == "MIKO-*****-*****-*****-DDDDD"
    assert writes(fake_http) == []
    assert "would release" in result["msg"]


def test_absent_without_key_is_idempotent(fake_http):
    v3_pbx(fake_http, "")
    result = manager("absent").run()
    assert result["changed"] is False and result["released_key_masked"] is None
    assert fake_http.calls() == [("POST", SQL)]


def test_absent_with_another_key_releases_nothing_and_warns(fake_http):
    v3_pbx(fake_http, OTHER)
    warnings: list = []
    result = manager("absent", warnings=warnings, license_key=KEY).run()
    assert result["changed"] is False and writes(fake_http) == []
    assert warnings and "nothing released" in warnings[0]
    assert_no_key_in(warnings)


# state: present


def test_present_already_bound_is_a_no_op(fake_http):
    v3_pbx(fake_http, KEY, info_ok())
    result = manager("present", license_key=KEY).run()
    assert result["changed"] is False and result["actions"] == []
    assert writes(fake_http) == []
    assert fake_http.calls() == [("POST", SQL), ("GET", INFO)]


def test_present_binds_an_unbound_host_and_verifies(fake_http):
    v3_pbx(fake_http, "", info_ok(captured=10), apply=apply_ok())
    result = manager("present", license_key=KEY).run()
    assert result["changed"] is True and result["actions"] == [APPLY_KEY]
    assert result["binding_status"] == UNBOUND and result["binding_status_after"] == OK
    assert fake_http.calls() == [("POST", SQL), ("POST", APPLY), ("GET", INFO)]
    assert fake_http.requests[1].json == {"licKey": KEY}
    assert result["seats"]["captured"] == 10 and result["seats"]["full"] is True


def test_present_check_mode_plans_without_writing(fake_http):
    v3_pbx(fake_http, "", apply=apply_ok())
    result = manager("present", check_mode=True, license_key=KEY).run()
    assert result["changed"] is True and result["actions"] == [APPLY_KEY]
    assert result["binding_status_after"] == OK
    assert writes(fake_http) == []
    assert result["msg"].startswith("would bind")


def test_present_binding_required_resets_then_applies(fake_http):
    v3_pbx(fake_http, KEY, info_2008(), info_ok(), apply=apply_ok())
    result = manager("present", license_key=KEY).run()
    assert result["actions"] == [RESET_KEY, APPLY_KEY]
    assert fake_http.calls() == [("POST", SQL), ("GET", INFO), ("GET", RESET), ("POST", APPLY), ("GET", INFO)]
    assert result["binding_status"] == BINDING_REQUIRED and result["binding_status_after"] == OK


def test_present_key_mismatch_refused_without_replace_key(fake_http):
    v3_pbx(fake_http, OTHER, apply=apply_ok())
    with pytest.raises(BindingFailure) as failed:
        manager("present", license_key=KEY).run()
    msg = failed.value.msg
    assert "MIKO-*****-*****-*****-WWWWW" in msg and "MIKO-*****-*****-*****-DDDDD" in msg
    assert "replace_key: true" in msg
    assert failed.value.result["binding_status"] == KEY_MISMATCH
    assert writes(fake_http) == []
    assert_no_key_in(failed.value.result)


def test_present_key_mismatch_replaced_with_replace_key(fake_http):
    v3_pbx(fake_http, OTHER, info_ok(), apply=apply_ok())
    result = manager("present", license_key=KEY, replace_key=True).run()
    assert writes(fake_http) == [("GET", RESET), ("POST", APPLY)]
    assert fake_http.calls().index(("GET", PING)) < fake_http.calls().index(("GET", RESET))
    assert result["released_key_masked"] == "MIKO-*****-*****-*****-WWWWW"
    assert result["binding_status"] == KEY_MISMATCH and result["binding_status_after"] == OK
    assert_no_key_in(result)


def test_present_replace_key_is_refused_when_the_licensing_service_is_silent(fake_http):
    # Resetting the foreign key would leave the PBX with no key if the new one cannot be applied.
    v3_pbx(fake_http, OTHER, apply=apply_ok())
    fake_http.set("GET", PING, Reply(422, json=v3_fail([], "ping")))
    for check_mode in (True, False):
        with pytest.raises(BindingFailure) as failed:
            manager("present", check_mode=check_mode, license_key=KEY, replace_key=True).run()
        assert "licensing service" in failed.value.msg and "Nothing changed" in failed.value.msg
        assert failed.value.result["changed"] is False
    assert writes(fake_http) == []


def test_present_binding_required_needs_no_ping(fake_http):
    # The 2008 answer already proved that the licensing service answers.
    v3_pbx(fake_http, KEY, info_2008(), info_ok(), apply=apply_ok())
    manager("present", license_key=KEY).run()
    assert fake_http.count("GET", PING) == 0


def test_present_known_seats_full_fails_before_any_write(fake_http):
    v3_pbx(fake_http, "", apply=apply_ok())
    holders = ["pbx-%03d" % i for i in range(1, 11)]
    with pytest.raises(BindingFailure) as failed:
        manager(
            "present",
            license_key=KEY,
            previous_host="pbx-007",
            known_seats={"count": 10, "captured": 10, "holders": holders},
        ).run()
    assert writes(fake_http) == []
    result = failed.value.result
    assert "10 of 10 seats captured, 0 free" in failed.value.msg
    assert "pbx-001" in failed.value.msg
    assert result["manual_step"]["reset_seat_of"] == "pbx-007"
    assert result["changed"] is False
    assert_no_key_in(result)


def test_present_server_2008_maps_to_the_same_clear_error_without_retry(fake_http):
    v3_pbx(fake_http, "", apply=apply_2008())
    with pytest.raises(BindingFailure) as failed:
        manager("present", license_key=KEY, previous_host="pbx-007").run()
    assert fake_http.count("POST", APPLY) == 1
    assert "licence error 2008" in failed.value.msg
    assert failed.value.result["manual_step"]["reset_seat_of"] == "pbx-007"
    assert failed.value.result["binding_status_after"] == UNBOUND
    assert failed.value.result["licence_error"]["code"] == 2008


def test_present_seat_shortage_warn_returns_the_manual_step(fake_http):
    v3_pbx(fake_http, "", apply=apply_ok())
    warnings: list = []
    result = manager(
        "present",
        warnings=warnings,
        license_key=KEY,
        on_seat_shortage="warn",
        known_seats={"count": 10, "captured": 10, "holders": []},
    ).run()
    assert result["changed"] is False and writes(fake_http) == []
    assert result["manual_step"] is not None
    assert warnings and "licence cabinet" in warnings[0]
    assert_no_key_in(warnings)


def test_present_binding_required_and_2008_after_reset_says_the_key_is_gone(fake_http):
    # The key had no seat on this machine; the re-bind is refused, and sending the same key again
    # would be refused the same way, so no rollback is attempted and the message says so loudly.
    v3_pbx(fake_http, KEY, info_2008(), apply=apply_2008())
    stored_keys(fake_http, KEY, "")
    with pytest.raises(BindingFailure) as failed:
        manager("present", license_key=KEY).run()
    result = failed.value.result
    assert result["changed"] is True and result["actions"] == [RESET_KEY]
    assert result["binding_status_after"] == UNBOUND and result["license_key_masked"] is None
    assert "now holds no key" in failed.value.msg
    assert fake_http.count("POST", APPLY) == 1 and fake_http.count("GET", RESET) == 1
    assert result["manual_step"] is not None


def test_present_unknown_refuses_to_guess(fake_http):
    v3_pbx(fake_http, KEY, Reply(422, json=v3_fail([RAW_NO_ANSWER], "getLicenseInfo")), apply=apply_ok())
    with pytest.raises(BindingFailure) as failed:
        manager("present", license_key=KEY).run()
    assert writes(fake_http) == []
    assert failed.value.result["binding_status"] == UNKNOWN


# legacy generation (2024.1): admin session, key from the admin page, HTTP 200 for every answer

LEGACY_LOGIN = "/admin-cabinet/session/start"
LEGACY_PAGE = "/admin-cabinet/pbx-extension-modules/index"
L_INFO = "/pbxcore/api/license/getLicenseInfo"
L_RESET = "/pbxcore/api/license/resetKey"
L_APPLY = "/pbxcore/api/license/processUserRequest"


def legacy_pbx(fake_http, stored: str, *info, apply=None):
    fake_http.add(
        "POST",
        LEGACY_LOGIN,
        json={"success": True, "reload": "/admin-cabinet/extensions/index", "message": []},
        cookies={"PHPSESSID": "sess1"},
    )
    page = "<script>var globalPBXLicense = '%s'; var globalPBXVersion = '2024.1.114';</script>" % stored
    fake_http.add("GET", LEGACY_PAGE, text=page)
    for reply in info:
        fake_http.add("GET", L_INFO, json=reply)
    fake_http.add("GET", L_RESET, json=legacy_ok([], "resetKey"))
    if apply is not None:
        fake_http.add("POST", L_APPLY, json=apply)


def legacy_manager(state: str, **options) -> BindingManager:
    client = MikoPBXClient(PBX_URL, username="admin", password="secret-pass", retries=0)
    return BindingManager(client, BindingOptions(state=state, **options))


L_FEATURE = "/pbxcore/api/license/getMikoPBXFeatureStatus"
# 2024.1 answers a failed getLicenseInfo with result false and no message at all.
LEGACY_INFO_FAILED = legacy_fail([], "getLicenseInfo")
LEGACY_FEATURE_2008 = legacy_fail({"license": [TR_2008]}, "getMikoPBXFeatureStatus")
LEGACY_FEATURE_DOWN = legacy_fail(
    {"license": ["The licensing server did not answer. Check the Internet connection settings of the station"]},
    "getMikoPBXFeatureStatus",
)


def legacy_calls(fake_http) -> list[tuple[str, str]]:
    return [c for c in fake_http.calls() if c[1].startswith("/pbxcore/api/license/")]


def test_legacy_verified_binding_required_is_told_by_the_feature_check(fake_http):
    legacy_pbx(fake_http, KEY, LEGACY_INFO_FAILED)
    fake_http.add("GET", L_FEATURE, json=LEGACY_FEATURE_2008)
    result = legacy_manager("verified", license_key=KEY).run()
    assert result["binding_status"] == BINDING_REQUIRED
    assert result["verified_by"] == "feature_status"
    assert legacy_calls(fake_http) == [("GET", L_INFO), ("GET", L_FEATURE)]


def test_legacy_verified_licensing_down_is_unknown(fake_http):
    legacy_pbx(fake_http, KEY, LEGACY_INFO_FAILED)
    fake_http.add("GET", L_FEATURE, json=LEGACY_FEATURE_DOWN)
    result = legacy_manager("verified", license_key=KEY).run()
    assert result["binding_status"] == UNKNOWN
    assert result["licence_error"]["classification"] == "unreachable"


def test_legacy_bound_with_info_needs_no_feature_check(fake_http):
    legacy_pbx(fake_http, KEY, legacy_ok({"licenseInfo": license_info_string(KEY, captured=4)}, "getLicenseInfo"))
    result = legacy_manager("verified", license_key=KEY).run()
    assert result["binding_status"] == OK and result["verified_by"] == "licence_info"
    assert result["seats"]["captured"] == 4
    assert legacy_calls(fake_http) == [("GET", L_INFO)]


def test_legacy_rebind_relies_on_the_key_application_while_the_failure_is_cached(fake_http):
    # Before and after the re-bind the PBX serves its cached "no seat" answer (120 s per key).
    legacy_pbx(
        fake_http,
        KEY,
        LEGACY_INFO_FAILED,
        apply=legacy_ok({"PBXLicense": KEY}, "processUserRequest", {"info": ["Registration completed successfully"]}),
    )
    fake_http.add("GET", L_FEATURE, json=LEGACY_FEATURE_2008)
    warnings: list = []
    client = MikoPBXClient(PBX_URL, username="admin", password="secret-pass", retries=0)
    result = BindingManager(client, BindingOptions(state="present", license_key=KEY), warn=warnings.append).run()
    assert result["binding_status"] == BINDING_REQUIRED and result["binding_status_after"] == OK
    assert result["verified_by"] == "key_application"
    assert legacy_calls(fake_http) == [
        ("GET", L_INFO),
        ("GET", L_FEATURE),
        ("GET", L_RESET),
        ("POST", L_APPLY),
        ("GET", L_INFO),
        ("GET", L_FEATURE),
    ]
    assert fake_http.requests[-3].form == {"licKey": [KEY]}
    assert warnings and "120-second cache" in warnings[0]
    assert_no_key_in(warnings)


def test_legacy_rebind_when_the_cache_was_fresh_is_confirmed_by_licence_info(fake_http):
    legacy_pbx(
        fake_http,
        KEY,
        LEGACY_INFO_FAILED,
        legacy_ok({"licenseInfo": license_info_string(KEY, captured=4)}, "getLicenseInfo"),
        apply=legacy_ok({"PBXLicense": KEY}, "processUserRequest", {"info": ["Registration completed successfully"]}),
    )
    fake_http.add("GET", L_FEATURE, json=LEGACY_FEATURE_2008)
    result = legacy_manager("present", license_key=KEY).run()
    assert result["binding_status_after"] == OK and result["verified_by"] == "licence_info"
    assert result["seats"]["captured"] == 4


def test_legacy_apply_2008_is_a_seat_shortage(fake_http):
    legacy_pbx(fake_http, "", apply=legacy_fail({"license": [TR_2008]}, "processUserRequest"))
    with pytest.raises(BindingFailure) as failed:
        legacy_manager("present", license_key=KEY, known_seats={"holders": ["pbx-002"]}).run()
    assert failed.value.result["manual_step"]["holders"] == ["pbx-002"]
    assert fake_http.count("POST", L_APPLY) == 1


# ------------------------------------------------------------------ C1: release while the licensing service is silent
#
# resetKey with the licensing service silent clears the key locally and leaves the seat held in the
# cabinet: the module refuses before any write unless force_release is set.

RAW_DNS = "0: Could not resolve host: lic.mikopbx.com"
LICENSING_SILENT = [
    pytest.param(Reply(422, json=v3_fail([RAW_NO_ANSWER], "getLicenseInfo")), id="no_answer"),
    pytest.param(Reply(422, json=v3_fail([RAW_DNS], "getLicenseInfo")), id="dns"),
    pytest.param(Reply(503, json=v3_fail(["503: upstream licensing error"], "getLicenseInfo")), id="upstream"),
]


@pytest.mark.parametrize("info", LICENSING_SILENT)
@pytest.mark.parametrize("check_mode", [False, True])
def test_absent_licensing_silent_fails_before_any_write(fake_http, info, check_mode):
    v3_pbx(fake_http, KEY, info)
    warnings: list = []
    with pytest.raises(BindingFailure) as failed:
        manager("absent", check_mode=check_mode, warnings=warnings, host_name="pbx-003").run()
    assert writes(fake_http) == []
    result = failed.value.result
    assert result["changed"] is False and result["actions"] == [] and result["released_key_masked"] is None
    assert result["binding_status"] == UNKNOWN and result["license_key_masked"] == "MIKO-*****-*****-*****-DDDDD"
    msg = failed.value.msg
    assert "does not answer" in msg and "443" in msg and "Nothing changed" in msg
    assert "seat held" in msg and "force_release" in msg
    assert result["manual_step"]["reset_seat_of"] == "pbx-003"
    assert "pbx-003" in result["manual_step"]["instructions"]
    assert failed.value.error is not None
    assert_no_key_in(result)


def test_absent_legacy_licensing_silent_fails_before_any_write(fake_http):
    legacy_pbx(fake_http, KEY, LEGACY_INFO_FAILED)
    fake_http.add("GET", L_FEATURE, json=LEGACY_FEATURE_DOWN)
    with pytest.raises(BindingFailure) as failed:
        legacy_manager("absent").run()
    assert ("GET", L_RESET) not in fake_http.calls()
    assert "443" in failed.value.msg and failed.value.result["manual_step"] is not None


def test_absent_force_release_clears_the_key_and_says_the_seat_stays_held(fake_http):
    v3_pbx(fake_http, KEY, LICENSING_SILENT[0].values[0])
    stored_keys(fake_http, KEY, "")
    warnings: list = []
    result = manager("absent", warnings=warnings, force_release=True, host_name="pbx-003").run()
    assert writes(fake_http) == [("GET", RESET)]
    assert result["changed"] is True and result["binding_status_after"] == UNBOUND
    assert result["manual_step"]["reset_seat_of"] == "pbx-003"
    assert "still held" in result["msg"]
    assert warnings and "stays held" in warnings[0]
    assert_no_key_in([result, warnings])


def test_absent_force_release_check_mode_sends_nothing_but_warns(fake_http):
    v3_pbx(fake_http, KEY, LICENSING_SILENT[0].values[0])
    warnings: list = []
    result = manager("absent", check_mode=True, warnings=warnings, force_release=True).run()
    assert writes(fake_http) == []
    assert result["changed"] is True and result["manual_step"] is not None
    assert warnings and "stays held" in warnings[0]


def test_absent_force_release_is_not_needed_when_the_service_answers(fake_http):
    v3_pbx(fake_http, KEY, info_ok())
    warnings: list = []
    result = manager("absent", warnings=warnings, force_release=True).run()
    assert writes(fake_http) == [("GET", RESET)]
    assert result["manual_step"] is None and warnings == []


def test_absent_binding_required_still_releases(fake_http):
    # 2008 proves the licensing service answers; this machine holds no seat to leak.
    v3_pbx(fake_http, KEY, info_2008())
    result = manager("absent").run()
    assert writes(fake_http) == [("GET", RESET)] and result["changed"] is True


# ------------------------------------------------------------------ C2: a refused new key is rolled back

RAW_2026 = "2026: License key number is wrong"


def apply_2026() -> Reply:
    return Reply(400, json=v3_fail({"license": [RAW_2026]}, "processUserRequest", http_code=400))


def applied_keys(fake_http) -> list[str]:
    return [r.json["licKey"] for r in fake_http.requests if r.method == "POST" and r.path == APPLY]


@pytest.mark.parametrize(
    ("refusal", "code"),
    [pytest.param(apply_2026, 2026, id="typo_2026"), pytest.param(apply_2008, 2008, id="full_2008")],
)
def test_replace_key_refused_restores_the_previous_key(fake_http, refusal, code):
    v3_pbx(fake_http, OTHER, apply=refusal())
    fake_http.add("POST", APPLY, Reply(json=apply_ok(OTHER)))  # the rollback: the previous key is accepted
    stored_keys(fake_http, OTHER, "", OTHER)
    with pytest.raises(BindingFailure) as failed:
        manager("present", license_key=KEY, replace_key=True, host_name="pbx-002").run()
    assert fake_http.calls() == [
        ("POST", SQL),
        ("GET", PING),
        ("GET", RESET),
        ("POST", APPLY),
        ("POST", SQL),
        ("POST", APPLY),
        ("POST", SQL),
    ]
    assert applied_keys(fake_http) == [KEY, OTHER]
    result = failed.value.result
    msg = failed.value.msg
    assert "new key MIKO-*****-*****-*****-DDDDD" in msg or "key MIKO-*****-*****-*****-DDDDD" in msg
    assert "previous key MIKO-*****-*****-*****-WWWWW was applied again" in msg
    assert str(code) in msg
    assert result["licence_error"]["code"] == code
    assert result["binding_status_after"] == KEY_MISMATCH
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-WWWWW"
    assert result["actions"] == [RESET_KEY, APPLY_KEY, binding.RESTORE_KEY]
    assert result["changed"] is False and result["released_key_masked"] is None
    assert failed.value.error.licence_code == code
    if code == 2008:
        assert result["manual_step"] is not None
    assert_no_key_in(result)


def test_replace_key_refused_and_rollback_refused_says_the_host_holds_no_key(fake_http):
    v3_pbx(fake_http, OTHER, apply=apply_2026())
    fake_http.add("POST", APPLY, apply_2008())  # the previous key's seat was taken meanwhile
    stored_keys(fake_http, OTHER, "")
    with pytest.raises(BindingFailure) as failed:
        manager("present", license_key=KEY, replace_key=True).run()
    assert applied_keys(fake_http) == [KEY, OTHER]
    assert fake_http.count("GET", RESET) == 1
    msg = failed.value.msg
    assert "ATTENTION" in msg and "now holds no key" in msg and "MIKO-*****-*****-*****-WWWWW" in msg
    result = failed.value.result
    assert result["binding_status_after"] == UNBOUND and result["license_key_masked"] is None
    assert result["changed"] is True and result["manual_step"] is not None
    assert_no_key_in(result)


def test_replace_key_check_mode_sends_no_write(fake_http):
    v3_pbx(fake_http, OTHER, apply=apply_2026())
    result = manager("present", check_mode=True, license_key=KEY, replace_key=True).run()
    assert writes(fake_http) == [] and result["changed"] is True


def test_apply_answer_lost_but_key_stored_is_verified_not_rolled_back(fake_http):
    import requests

    v3_pbx(fake_http, OTHER, info_ok())
    fake_http.add("POST", APPLY, requests.exceptions.ReadTimeout("read timed out"))
    stored_keys(fake_http, OTHER, KEY)
    warnings: list = []
    result = manager("present", warnings=warnings, license_key=KEY, replace_key=True).run()
    assert applied_keys(fake_http) == [KEY]
    assert result["binding_status_after"] == OK
    assert warnings and "re-read shows the key is stored" in warnings[0]


def test_unbound_host_apply_refused_changes_nothing(fake_http):
    v3_pbx(fake_http, "", apply=apply_2026())
    stored_keys(fake_http, "")
    with pytest.raises(BindingFailure) as failed:
        manager("present", license_key=KEY).run()
    assert writes(fake_http) == [("POST", APPLY)]
    assert failed.value.result["changed"] is False
    assert "2026" in failed.value.msg and "Nothing changed" in failed.value.msg


# ------------------------------------------------------------------ M1: resetKey whose answer is lost


def test_absent_reset_timeout_key_gone_is_a_release_with_a_warning(fake_http):
    import requests

    v3_pbx(fake_http, KEY, info_ok())
    fake_http.set("GET", RESET, requests.exceptions.ReadTimeout("read timed out"))
    stored_keys(fake_http, KEY, "")
    warnings: list = []
    result = manager("absent", warnings=warnings).run()
    assert fake_http.count("GET", RESET) == 1
    assert result["changed"] is True and result["binding_status_after"] == UNBOUND
    assert "timed out" in result["msg"]
    assert warnings and "release happened" in warnings[0]


def test_absent_reset_timeout_key_still_there_changes_nothing(fake_http):
    import requests

    v3_pbx(fake_http, KEY, info_ok())
    fake_http.set("GET", RESET, requests.exceptions.ReadTimeout("read timed out"))
    stored_keys(fake_http, KEY, KEY)
    with pytest.raises(BindingFailure) as failed:
        manager("absent").run()
    assert fake_http.count("GET", RESET) == 1
    result = failed.value.result
    assert result["changed"] is False and result["released_key_masked"] is None
    assert "still holds key MIKO-*****-*****-*****-DDDDD" in failed.value.msg
    assert "safe to run this task again" in failed.value.msg
    assert failed.value.error.classification == "timeout"


def test_absent_reset_timeout_and_reread_fails_says_the_state_is_unknown(fake_http):
    import requests

    v3_pbx(fake_http, KEY, info_ok())
    fake_http.set("GET", RESET, requests.exceptions.ReadTimeout("read timed out"))
    fake_http.set("POST", SQL, Reply(json=settings_reply(KEY)), requests.exceptions.ConnectionError("refused"))
    with pytest.raises(BindingFailure) as failed:
        manager("absent").run()
    assert fake_http.count("GET", RESET) == 1
    assert failed.value.result["binding_status_after"] == UNKNOWN
    assert "state=verified" in failed.value.msg


def test_present_rebind_reset_timeout_key_gone_goes_on_with_the_apply(fake_http):
    import requests

    v3_pbx(fake_http, KEY, info_2008(), info_ok(), apply=apply_ok())
    fake_http.set("GET", RESET, requests.exceptions.ReadTimeout("read timed out"))
    stored_keys(fake_http, KEY, "")
    result = manager("present", license_key=KEY).run()
    assert fake_http.count("GET", RESET) == 1 and applied_keys(fake_http) == [KEY]
    assert result["binding_status_after"] == OK


def test_absent_cached_licence_info_but_ping_fails_refuses_before_any_write(fake_http):
    # The licence info answer may come from the PBX's 120 s cache; license:ping asks the service itself.
    v3_pbx(fake_http, KEY, info_ok())
    fake_http.set("GET", PING, Reply(422, json=v3_fail([RAW_NO_ANSWER], "ping")))
    with pytest.raises(BindingFailure) as failed:
        manager("absent").run()
    assert writes(fake_http) == [] and fake_http.count("GET", PING) == 1
    assert "443" in failed.value.msg and failed.value.result["manual_step"] is not None


def test_absent_pings_before_the_reset(fake_http):
    v3_pbx(fake_http, KEY, info_ok())
    manager("absent").run()
    assert fake_http.calls() == [("POST", SQL), ("GET", INFO), ("GET", PING), ("GET", RESET)]
