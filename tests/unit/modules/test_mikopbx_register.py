"""Unit tests of mikopbx_register: the HTTP boundary is faked (tests/unit/conftest.py), the client,
envelope parser, planning and the module itself run for real."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.mikopbx.marketplace.plugins.module_utils import register_plan
from ansible_collections.mikopbx.marketplace.plugins.modules import mikopbx_register

# The shared body builders of tests/unit/conftest.py (fixture ``bodies``), set for every test below.
B: Any = None
PBX_URL = "https://pbx.example.net"
V3 = "/pbxcore/api/v3/"
LEGACY = "/pbxcore/api/"

KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"
OTHER_KEY = "MIKO-ZZZZZ-YYYYY-XXXXX-WWWWW"
NEW_TRIAL_KEY = "MIKO-TTTTT-RRRRR-IIIII-AAAAL"
COUPON = "MIKOUPD-CCCCC-OOOOO-UUUUU-PPPPP"
API_KEY = "a1" * 32
PASSWORD = "s3cret-Pa55"

SQL = V3 + "system:executeSqlRequest"
PROCESS_V3 = V3 + "license:processUserRequest"
PROCESS_LEGACY = LEGACY + "license/processUserRequest"
LEGACY_LOGIN = "/admin-cabinet/session/start"
LEGACY_PAGE = "/admin-cabinet/pbx-extension-modules/index"

# The emulator's (and our) English paraphrases of the PBX's translated licence texts: no codes in them.
TEXT_2026 = "The licence key number is wrong. Check the key and try again"
TEXT_2022 = (
    "A key for a different company was already issued to this e-mail address. Use the key sent earlier or "
    "correct the company name"
)
TEXT_2051 = "This station was already registered with another e-mail address. Use the key issued earlier"
TEXT_NO_ANSWER = "The licensing server did not answer. Check the Internet connection settings of the station"
NETWORK_WORDS = ("network", "firewall", "dns", "internet", "reach", "443", "gateway")


# ------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _bodies(bodies: Any) -> None:
    global B
    B = bodies
    assert bodies.PBX_URL == PBX_URL and bodies.V3 == V3 and bodies.LEGACY == LEGACY


def v3_args(**extra: Any) -> dict[str, Any]:
    args = {"url": PBX_URL, "api_key": API_KEY, "validate_certs": False}
    args.update(extra)
    return args


def legacy_args(**extra: Any) -> dict[str, Any]:
    args = {
        "url": PBX_URL,
        "username": "admin",
        "password": PASSWORD,
        "validate_certs": False,
        "api_generation": "legacy",
    }
    args.update(extra)
    return args


def run(
    capsys: pytest.CaptureFixture[str],
    args: dict[str, Any],
    *,
    check: bool = False,
    diff: bool = False,
    no_log: bool = False,
) -> tuple[dict[str, Any], str]:
    """Run the module's main() and return (result, raw stdout)."""
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff, _ansible_no_log=no_log)
    # Warnings are collected process-wide for one module run; start every run empty.
    ansible_warnings._global_warnings.clear()
    ansible_warnings._global_deprecations.clear()
    with patch_module_args(args), pytest.raises(SystemExit):
        mikopbx_register.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def sql_rows(key: str) -> dict[str, Any]:
    rows = [{"key": "PBXVersion", "value": "2026.1.223"}, {"key": "Name", "value": "PBX system"}]
    if key:
        rows.append({"key": "PBXLicense", "value": key})
    return B.v3_ok({"query": "SELECT", "database": "main", "rows": rows, "rowCount": len(rows), "affectedRows": 0})


def legacy_page(key: str) -> Any:
    html = (
        "<html><head><script>var globalPBXLicense = '%s';\nvar globalPBXVersion = '2024.1.114';\n"
        "var globalPBXName = 'PBX system';</script></head><body></body></html>" % key
    )
    return B.Reply(200, text=html, headers={"Content-Type": "text/html; charset=UTF-8"})


def stored_v3(fake_http: Any, *keys: str) -> None:
    """The stored key as successive settings reads see it (the last one repeats)."""
    fake_http.set("POST", SQL, *[B.Reply(200, json=sql_rows(k)) for k in keys])


def legacy_pbx(fake_http: Any, *keys: str) -> None:
    fake_http.set(
        "POST",
        LEGACY_LOGIN,
        B.Reply(
            200,
            json={"success": True, "reload": "/admin-cabinet/extensions/index", "message": []},
            cookies={"PHPSESSID": "sess0123456789"},
        ),
    )
    fake_http.set("GET", LEGACY_PAGE, *[legacy_page(k) for k in keys])


def activated(key: str, info_as_string: bool = False) -> dict[str, Any]:
    text = "Registration completed successfully"
    return B.v3_ok({"PBXLicense": key}, "processUserRequest", {"info": text if info_as_string else [text]})


def warnings_text(result: dict[str, Any]) -> str:
    return json.dumps(result.get("warnings", []), ensure_ascii=False)


def writes(fake_http: Any) -> list[Any]:
    return [r for r in fake_http.requests if r.path.endswith("processUserRequest")]


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


# ------------------------------------------------------------------ local validation (zero requests)


@pytest.mark.parametrize(
    "bad_key",
    [
        "MIKO-AAAAA-BBBBB-CCCCC-DDDD",  # one character short (FC-05)
        "MIKO-AAAAA-BBBBB-CCCCC-DDDDDD",
        "MIKO-AAAAA-BBBBB-CCCCC",
        "MIKOAAAAABBBBBCCCCCDDDDD",
        "MIKO-AAAAA-BBBBB-CCCCC-DDDD!",
        "",
    ],
)
def test_malformed_key_fails_before_any_request(fake_http, capsys, bad_key):
    result, out = run(capsys, v3_args(license_key=bad_key))

    assert result["failed"] is True
    assert "not a valid MikoPBX licence key" in result["msg"]
    assert fake_http.requests == []
    assert result["changed"] is False
    if len(bad_key) > 8:
        assert bad_key not in out


def test_one_character_short_key_names_the_group(fake_http, capsys):
    result = run(capsys, legacy_args(license_key="MIKO-AAAAA-BBBBB-CCCCC-DDDD"))[0]

    assert "one character short in group 4" in result["msg"]
    assert "trial registration" in result["msg"]
    assert fake_http.requests == []


def test_malformed_coupon_fails_before_any_request(fake_http, capsys):
    result = run(capsys, v3_args(license_key=KEY, coupon="MIKOUPD-CCCCC-OOOOO-UUUUU"))[0]

    assert result["failed"] is True
    assert "coupon" in result["msg"]
    assert fake_http.requests == []


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"company_name": "Example", "email": "not-an-email", "contact_name": "Jane"}, "e-mail"),
        ({"company_name": "  ", "email": "a@example.com", "contact_name": "Jane"}, "company_name"),
        (
            {"company_name": "Example", "email": "a@example.com", "contact_name": "Jane", "tax_id": "12-34"},
            "tax_id",
        ),
    ],
)
def test_bad_trial_details_fail_before_any_request(fake_http, capsys, extra, words):
    result = run(capsys, v3_args(**extra))[0]

    assert result["failed"] is True
    assert words in result["msg"]
    assert fake_http.requests == []


def test_key_and_company_details_are_mutually_exclusive(fake_http, capsys):
    result = run(capsys, v3_args(license_key=KEY, company_name="X", email="a@example.com", contact_name="J"))[0]

    assert result["failed"] is True
    assert "mutually exclusive" in result["msg"]
    assert fake_http.requests == []


def test_reveal_without_no_log_fails_before_any_request(fake_http, capsys):
    result = run(capsys, v3_args(license_key=KEY, reveal_license_key=True))[0]

    assert result["failed"] is True
    assert "no_log: true" in result["msg"]
    assert fake_http.requests == []


# ------------------------------------------------------------------ applying a key


def test_v3_applies_normalised_key_once(fake_http, capsys):
    """FC-05: lower case, spaces and a newline are normalised; the key is applied once."""
    stored_v3(fake_http, "", KEY)
    fake_http.set("POST", PROCESS_V3, B.Reply(200, json=activated(KEY)))

    result, out = run(capsys, v3_args(license_key=" miko-aaaaa-bbbbb-ccccc-ddddd\n"), diff=True)

    assert result["changed"] is True
    assert result["action"] == "applied_key"
    assert result["registered"] is True
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-DDDDD"
    assert result["generation"] == "v3"
    assert result["diff"] == {
        "before": {"license_key": "", "registered": False},
        "after": {"license_key": "MIKO-*****-*****-*****-DDDDD", "registered": True},
    }
    sent = writes(fake_http)
    assert len(sent) == 1
    assert sent[0].json == {"licKey": KEY}
    assert_no_secret(out, KEY, API_KEY)


def test_v3_same_key_is_a_read_only_no_op(fake_http, capsys):
    """FC-02: the PBX holds K: one read, no write, changed false."""
    stored_v3(fake_http, KEY)

    result, out = run(capsys, v3_args(license_key=KEY), diff=True)

    assert result["changed"] is False
    assert result["action"] == "none"
    assert result["registered"] is True
    assert result["diff"] == {"before": {}, "after": {}}
    assert fake_http.calls() == [("POST", SQL)]
    assert fake_http.requests[0].json["query"].lstrip().upper().startswith("SELECT")
    assert_no_secret(out, KEY)


def test_legacy_applies_key_as_form_data(fake_http, capsys):
    legacy_pbx(fake_http, "", KEY)
    fake_http.set(
        "POST", PROCESS_LEGACY, B.Reply(200, json=B.legacy_ok({"PBXLicense": KEY}, messages={"info": ["ok"]}))
    )

    result, out = run(capsys, legacy_args(license_key=KEY))

    assert result["changed"] is True
    assert result["action"] == "applied_key"
    assert result["generation"] == "legacy"
    sent = writes(fake_http)
    assert len(sent) == 1
    assert sent[0].form == {"licKey": [KEY]}
    assert_no_secret(out, KEY, PASSWORD, "sess0123456789")


def test_legacy_same_key_costs_login_and_one_page(fake_http, capsys):
    legacy_pbx(fake_http, KEY)

    result = run(capsys, legacy_args(license_key=KEY))[0]

    assert result["changed"] is False
    assert fake_http.calls() == [("POST", LEGACY_LOGIN), ("GET", LEGACY_PAGE)]


def test_legacy_same_key_answer_without_messages_is_not_a_failure(fake_http, capsys):
    """FC-02: 2024.1 answers an already stored key with result false and no messages."""
    legacy_pbx(fake_http, "", KEY)
    fake_http.set("POST", PROCESS_LEGACY, B.Reply(200, json=B.legacy_fail([])))

    result = run(capsys, legacy_args(license_key=KEY))[0]

    assert result.get("failed") is not True
    assert result["changed"] is True
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-DDDDD"
    assert len(writes(fake_http)) == 1


def test_different_key_is_refused_without_force(fake_http, capsys):
    stored_v3(fake_http, OTHER_KEY)

    result, out = run(capsys, v3_args(license_key=KEY))

    assert result["failed"] is True
    assert "MIKO-*****-*****-*****-WWWWW" in result["msg"]
    assert "MIKO-*****-*****-*****-DDDDD" in result["msg"]
    assert "force: true" in result["msg"]
    assert result["error"]["method"] is None  # refused before any write
    assert writes(fake_http) == []
    assert_no_secret(out, KEY, OTHER_KEY)


def test_different_key_is_replaced_with_force(fake_http, capsys):
    stored_v3(fake_http, OTHER_KEY, KEY)
    fake_http.set("POST", PROCESS_V3, B.Reply(200, json=activated(KEY)))

    result, out = run(capsys, v3_args(license_key=KEY, force=True), diff=True)

    assert result["changed"] is True
    assert result["action"] == "replaced_key"
    assert result["diff"]["before"] == {"license_key": "MIKO-*****-*****-*****-WWWWW"}
    assert result["diff"]["after"] == {"license_key": "MIKO-*****-*****-*****-DDDDD"}
    assert_no_secret(out, KEY, OTHER_KEY)


def test_check_mode_sends_no_write_and_says_what_would_change(fake_http, capsys):
    """FC-06 (register part)."""
    stored_v3(fake_http, "")

    result, out = run(capsys, v3_args(license_key=KEY), check=True, diff=True)

    assert result["changed"] is True
    assert result["action"] == "applied_key"
    assert "would" in result["msg"]
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-DDDDD"
    assert result["diff"]["after"]["license_key"] == "MIKO-*****-*****-*****-DDDDD"
    assert fake_http.calls() == [("POST", SQL)]
    assert_no_secret(out, KEY)


def test_check_mode_trial_sends_no_write(fake_http, capsys):
    stored_v3(fake_http, "")

    result = run(
        capsys, v3_args(company_name="Example LLC", email="it@example.com", contact_name="Jane"), check=True, diff=True
    )[0]

    assert result["changed"] is True
    assert result["action"] == "registered_trial"
    assert result["diff"]["after"]["license_key"] == register_plan.TRIAL_PLACEHOLDER
    assert writes(fake_http) == []


# ------------------------------------------------------------------ licence failures


def test_fc01_unknown_key_is_invalid_key_not_network_v3(fake_http, capsys):
    stored_v3(fake_http, "")
    fake_http.set("POST", PROCESS_V3, B.Reply(400, json=B.v3_fail({"license": [TEXT_2026]}, http_code=400)))

    result, out = run(capsys, v3_args(license_key=KEY))

    assert result["failed"] is True
    assert result["error"]["classification"] == "licence:2026"
    assert result["error"]["licence_code"] == 2026
    assert (result["error"]["method"], result["error"]["path"], result["error"]["status"]) == ("POST", PROCESS_V3, 400)
    assert "does not know this licence key" in result["msg"]
    lowered = result["msg"].lower()
    assert not [w for w in NETWORK_WORDS if w in lowered], result["msg"]
    assert result["changed"] is False
    assert result["license_key_masked"] == ""
    assert len(writes(fake_http)) == 1
    assert_no_secret(out, KEY)


def test_fc01_unknown_key_is_invalid_key_legacy(fake_http, capsys):
    legacy_pbx(fake_http, "")
    fake_http.set("POST", PROCESS_LEGACY, B.Reply(200, json=B.legacy_fail({"license": [TEXT_2026]})))

    result = run(capsys, legacy_args(license_key=KEY))[0]

    assert result["error"]["classification"] == "licence:2026"
    lowered = result["msg"].lower()
    assert not [w for w in NETWORK_WORDS if w in lowered], result["msg"]


def test_fc01_licensing_down_v3_is_unreachable(fake_http, capsys):
    stored_v3(fake_http, "")
    fake_http.set("POST", PROCESS_V3, B.Reply(503, json=B.v3_fail({"license": [TEXT_NO_ANSWER]}, http_code=503)))

    result = run(capsys, v3_args(license_key=KEY))[0]

    assert result["failed"] is True
    assert result["error"]["classification"] == "unreachable"
    assert "lic.mikopbx.com" in result["msg"]
    assert "firewall" in result["msg"] or "DNS" in result["msg"]
    assert len(writes(fake_http)) == 1  # a licensing failure is not retried


@pytest.mark.parametrize(
    "raw",
    [
        "0: No answer from the local licence service",
        "0: Could not resolve host: lic.mikopbx.com",
        TEXT_NO_ANSWER,
    ],
)
def test_fc01_licensing_down_legacy_is_unreachable(fake_http, capsys, raw):
    legacy_pbx(fake_http, "")
    fake_http.set("POST", PROCESS_LEGACY, B.Reply(200, json=B.legacy_fail({"license": [raw]})))

    result = run(capsys, legacy_args(license_key=KEY))[0]

    assert result["error"]["classification"] == "unreachable"
    assert "DNS" in result["msg"]


@pytest.mark.parametrize("code, text", [(2022, TEXT_2022), (2051, TEXT_2051)])
def test_fc04_trial_conflict_names_code_and_reuse_hint_without_retry(fake_http, capsys, code, text):
    stored_v3(fake_http, "")
    fake_http.set("POST", PROCESS_V3, B.Reply(502, json=B.v3_fail({"license": [text]}, http_code=502)))

    result = run(capsys, v3_args(company_name="Example LLC", email="it@example.com", contact_name="Jane"))[0]

    assert result["failed"] is True
    assert result["error"]["classification"] == "licence:%d" % code
    assert "licence code %d" % code in result["msg"]
    assert "reuse" in result["msg"]
    assert len(writes(fake_http)) == 1


def test_fc04_legacy_raw_code_2022(fake_http, capsys):
    legacy_pbx(fake_http, "")
    fake_http.set(
        "POST", PROCESS_LEGACY, B.Reply(200, json=B.legacy_fail({"license": ["2022: key for another company issued"]}))
    )

    result = run(capsys, legacy_args(company_name="Example LLC", email="it@example.com", contact_name="Jane"))[0]

    assert result["error"]["classification"] == "licence:2022"
    assert len(writes(fake_http)) == 1


@pytest.mark.parametrize(
    "code, text",
    [
        (2037, "The registration key given together with the coupon is wrong"),
        (2040, "There is no such coupon"),
        (2041, "This coupon has already been used"),
        (2057, "This coupon is blocked"),
    ],
)
def test_coupon_failure_after_key_applied_reports_changed(fake_http, capsys, code, text):
    stored_v3(fake_http, "", KEY)
    body = B.v3_fail({"info": ["Registration completed successfully"], "license": [text]}, http_code=502)
    fake_http.set("POST", PROCESS_V3, B.Reply(502, json=body))

    result, out = run(capsys, v3_args(license_key=KEY, coupon=COUPON))

    assert result["failed"] is True
    assert result["changed"] is True  # the key was stored, only the coupon failed
    assert result["error"]["classification"] == "licence:%d" % code
    assert "coupon" in result["msg"]
    assert writes(fake_http)[0].json == {"licKey": KEY, "coupon": COUPON}
    assert_no_secret(out, KEY, COUPON)


def test_coupon_with_the_stored_key_is_skipped_without_force(fake_http, capsys):
    stored_v3(fake_http, KEY)

    result, out = run(capsys, v3_args(license_key=KEY, coupon=COUPON))

    assert result["changed"] is False
    assert result["coupon_applied"] is False
    assert "force: true" in warnings_text(result)
    assert writes(fake_http) == []
    assert_no_secret(out, COUPON)


def test_coupon_with_the_stored_key_is_applied_with_force(fake_http, capsys):
    stored_v3(fake_http, KEY)
    ok = B.v3_ok({"PBXLicense": KEY}, messages={"info": ["ok", "The coupon was activated successfully"]})
    fake_http.set("POST", PROCESS_V3, B.Reply(200, json=ok))

    result, out = run(capsys, v3_args(license_key=KEY, coupon=COUPON, force=True), diff=True)

    assert result["changed"] is True
    assert result["action"] == "applied_coupon"
    assert result["coupon_applied"] is True
    assert result["diff"]["after"] == {"coupon": "MIKOUPD-*****-*****-*****-PPPPP"}
    assert_no_secret(out, KEY, COUPON)


# ------------------------------------------------------------------ trial registration


def test_fc02_trial_on_a_pbx_with_a_key_is_a_no_op(fake_http, capsys):
    stored_v3(fake_http, OTHER_KEY)

    result, out = run(
        capsys, v3_args(company_name="Example LLC", email="it@example.com", contact_name="Jane", force=True)
    )

    assert result["changed"] is False
    assert result["action"] == "none"
    assert result["registered"] is True
    assert "no trial registration" in result["msg"]
    assert writes(fake_http) == []
    assert_no_secret(out, OTHER_KEY)


def test_fc04_trial_v3_sends_utf8_fields_and_warns_about_numbers(fake_http, capsys):
    stored_v3(fake_http, "", NEW_TRIAL_KEY)
    fake_http.set("POST", PROCESS_V3, B.Reply(200, json=activated(NEW_TRIAL_KEY, info_as_string=True)))

    result, out = run(
        capsys,
        v3_args(
            company_name=' ООО "Ромашка" ',
            email="it@example.com",
            contact_name="Иван Петров",
            phone="+70000000000",
            tax_id="7700000000",
        ),
        diff=True,
    )

    assert result["changed"] is True
    assert result["action"] == "registered_trial"
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-AAAAL"
    assert result["diff"]["after"]["license_key"] == "MIKO-*****-*****-*****-AAAAL"
    assert "license_key" not in result
    sent = writes(fake_http)
    assert len(sent) == 1
    assert sent[0].json == {
        "companyname": 'ООО "Ромашка"',
        "email": "it@example.com",
        "contact": "Иван Петров",
        "telefone": "+70000000000",
        "inn": "7700000000",
    }
    assert "phone" in warnings_text(result)
    assert_no_secret(out, NEW_TRIAL_KEY)


def test_fc04_trial_legacy_sends_utf8_form(fake_http, capsys):
    legacy_pbx(fake_http, "", NEW_TRIAL_KEY)
    ok = B.legacy_ok({"PBXLicense": NEW_TRIAL_KEY}, messages={"info": "Registration completed successfully"})
    fake_http.set("POST", PROCESS_LEGACY, B.Reply(200, json=ok))

    company = dict(company_name="ООО «Ромашка»", email="it@example.com", contact_name="Иван")
    company["phone"] = "+7000"
    result = run(capsys, legacy_args(**company))[0]

    assert result["action"] == "registered_trial"
    assert "warnings" not in result  # the legacy API passes values through unchanged
    sent = writes(fake_http)[0]
    assert sent.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert sent.form["companyname"] == ["ООО «Ромашка»"]
    assert "%D0%9E%D0%9E%D0%9E" in sent.text  # UTF-8 percent-encoded


def test_reveal_returns_the_new_key_under_no_log(fake_http, capsys):
    stored_v3(fake_http, "", NEW_TRIAL_KEY)
    fake_http.set("POST", PROCESS_V3, B.Reply(200, json=activated(NEW_TRIAL_KEY)))

    result = run(
        capsys,
        v3_args(company_name="Example", email="it@example.com", contact_name="Jane", reveal_license_key=True),
        no_log=True,
    )[0]

    assert result["license_key"] == NEW_TRIAL_KEY
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-AAAAL"


def test_reveal_of_a_given_key_under_no_log(fake_http, capsys):
    stored_v3(fake_http, KEY)

    result = run(capsys, v3_args(license_key=KEY, reveal_license_key=True), no_log=True)[0]

    assert result["license_key"] == KEY


# ------------------------------------------------------------------ timeouts: never a double registration (FC-17)


def worker_timeout() -> Any:
    return B.Reply(400, json=B.v3_fail({"error": ["Request timeout or worker not responding"]}))


def test_timed_out_key_write_that_landed_is_not_repeated(fake_http, capsys):
    stored_v3(fake_http, "", KEY)
    fake_http.set("POST", PROCESS_V3, worker_timeout())

    result = run(capsys, v3_args(license_key=KEY))[0]

    assert result["changed"] is True
    assert result["action"] == "applied_key"
    assert len(writes(fake_http)) == 1
    assert fake_http.calls() == [("POST", SQL), ("POST", PROCESS_V3), ("POST", SQL)]


def test_timed_out_key_write_that_did_not_land_is_repeated_once_after_a_read(fake_http, capsys):
    stored_v3(fake_http, "", "", KEY)
    fake_http.set("POST", PROCESS_V3, worker_timeout(), B.Reply(200, json=activated(KEY)))

    result = run(capsys, v3_args(license_key=KEY))[0]

    assert result["changed"] is True
    assert fake_http.calls() == [
        ("POST", SQL),
        ("POST", PROCESS_V3),
        ("POST", SQL),
        ("POST", PROCESS_V3),
        ("POST", SQL),
    ]


def test_timed_out_key_and_coupon_write_reports_the_coupon_as_unknown(fake_http, capsys):
    stored_v3(fake_http, "", KEY)
    fake_http.set("POST", PROCESS_V3, worker_timeout())

    result, out = run(capsys, v3_args(license_key=KEY, coupon=COUPON))

    assert result["changed"] is True and result["action"] == "applied_key"
    assert result["coupon_applied"] is None  # unknown, not "not activated"
    assert "whether the coupon was activated is unknown" in result["msg"]
    assert "whether the coupon was activated is unknown" in warnings_text(result)
    assert len(writes(fake_http)) == 1
    assert_no_secret(out, KEY, COUPON)


def test_password_in_url_is_masked_even_when_other_input_is_also_wrong(fake_http, capsys):
    url = "https://admin:%s@pbx.example.net/" % PASSWORD
    # The url is checked first, so its password is masked before any other message can show the arguments.
    result, out = run(capsys, legacy_args(url=url, license_key="MIKO-bad", reveal_license_key=True))

    assert result["failed"] is True and "user name or password" in result["msg"]
    assert PASSWORD not in out and fake_http.requests == []


def test_coupon_without_license_key_names_the_missing_key(fake_http, capsys):
    result = run(capsys, v3_args(coupon=COUPON))[0]

    assert result["failed"] is True
    assert "coupon needs license_key" in result["msg"]
    assert "one of the following" not in result["msg"]
    assert fake_http.requests == []


def test_key_write_timing_out_twice_fails_as_timeout(fake_http, capsys):
    stored_v3(fake_http, "")
    fake_http.set("POST", PROCESS_V3, worker_timeout())

    result = run(capsys, v3_args(license_key=KEY))[0]

    assert result["failed"] is True
    assert result["error"]["classification"] == "timeout"
    assert len(writes(fake_http)) == 2


def test_read_timeout_of_a_legacy_key_write_is_reread(fake_http, capsys):
    legacy_pbx(fake_http, "", KEY)
    fake_http.set("POST", PROCESS_LEGACY, requests.exceptions.ReadTimeout("read timed out"))

    result = run(capsys, legacy_args(license_key=KEY))[0]

    assert result["changed"] is True
    assert len(writes(fake_http)) == 1


def test_timed_out_trial_is_never_repeated(fake_http, capsys):
    stored_v3(fake_http, "")
    fake_http.set("POST", PROCESS_V3, worker_timeout())

    result = run(capsys, v3_args(company_name="Example", email="it@example.com", contact_name="Jane"))[0]

    assert result["failed"] is True
    assert result["error"]["classification"] == "timeout"
    assert "not repeated" in result["msg"]
    assert len(writes(fake_http)) == 1


def test_timed_out_trial_that_landed_is_reported_registered(fake_http, capsys):
    stored_v3(fake_http, "", NEW_TRIAL_KEY)
    fake_http.set("POST", PROCESS_V3, worker_timeout())

    result, out = run(capsys, v3_args(company_name="Example", email="it@example.com", contact_name="Jane"))

    assert result["changed"] is True
    assert result["action"] == "registered_trial"
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-AAAAL"
    assert len(writes(fake_http)) == 1
    assert_no_secret(out, NEW_TRIAL_KEY)


# ------------------------------------------------------------------ auth (FC-16)


def test_wrong_password_one_login_credentials_rejected(fake_http, capsys):
    fake_http.set("POST", V3 + "auth:login", B.Reply(401, json=B.v3_fail({"error": ["Invalid login or password"]})))

    result, out = run(capsys, legacy_args(api_generation="v3", license_key=KEY))

    assert result["failed"] is True
    assert "credentials rejected" in result["msg"]
    assert fake_http.count("POST", V3 + "auth:login") == 1
    assert writes(fake_http) == []
    assert_no_secret(out, PASSWORD, KEY)


# ------------------------------------------------------------------ planning, directly


def test_plan_repr_never_shows_secrets():
    desired = register_plan.desired_from_params({"license_key": KEY, "coupon": COUPON})
    plan = register_plan.plan_registration(desired, "")

    assert KEY not in repr(desired) and COUPON not in repr(desired)
    assert KEY not in repr(plan)


def test_plan_malformed_stored_key_is_replaced_with_warning():
    desired = register_plan.desired_from_params({"license_key": KEY})
    plan = register_plan.plan_registration(desired, "garbage")

    assert plan.action == register_plan.ACTION_REPLACED_KEY
    assert plan.warnings


@pytest.mark.parametrize(
    "text, code, kind",
    [
        ("2026: License key not found", 2026, "invalid_key"),
        ("The licence key is invalid or has been blocked", 2009, "invalid_key"),
        ("The required licence is missing, or it is bound to a different MikoPBX station", 2008, "seat_shortage"),
        (TEXT_2022, 2022, "trial_conflict"),
        (TEXT_2051, 2051, "trial_conflict"),
        ("0: Connection timed out: lic.mikopbx.com:443", None, "unreachable"),
        ("Cannot reach the licensing server: host name lookup failed (check DNS)", None, "unreachable"),
        ("Registration failed. Check the Internet access of the station", None, "unreachable"),
    ],
)
def test_explain_licence_failure(text, code, kind):
    failure = register_plan.explain_licence_failure({"license": [text]}, 400)

    assert failure.code == code
    assert failure.kind == kind


def test_explain_empty_failure_is_unknown_not_network():
    failure = register_plan.explain_licence_failure({"license": [], "error": []}, 200)

    assert failure.kind == "unknown"
    assert "network" not in failure.fix.lower()


def test_sanitiser_warning_only_on_v3():
    trial = {"telefone": "+70000000000", "inn": "0123456789"}

    assert len(register_plan.sanitiser_warnings(trial, "v3")) == 2
    assert register_plan.sanitiser_warnings(trial, "legacy") == []
    assert register_plan.sanitiser_warnings({"telefone": "+7 000 000-00-00"}, "v3") == []


# ------------------------------------------------------------------ TLS options on every request (FC-19)


@pytest.mark.parametrize(
    "tls, expected",
    [
        ({"validate_certs": False}, False),
        ({"validate_certs": True, "ca_path": "pbx-ca.pem"}, "pbx-ca.pem"),
    ],
    ids=["validate_certs-false", "ca_path"],
)
def test_fc19_every_request_uses_the_tls_options(fake_http, capsys, tmp_path, tls, expected):
    if "ca_path" in tls:  # ca_path must exist: it is checked before any request
        (tmp_path / tls["ca_path"]).write_text("PEM")
        tls = dict(tls, ca_path=str(tmp_path / tls["ca_path"]))
        expected = tls["ca_path"]
    legacy_pbx(fake_http, "", KEY)
    fake_http.set("POST", PROCESS_LEGACY, B.Reply(200, json=B.legacy_ok({"PBXLicense": KEY})))
    args = legacy_args(license_key=KEY)
    args.update(tls)

    result = run(capsys, args)[0]

    assert result["changed"] is True
    assert [r.path for r in fake_http.requests] == [LEGACY_LOGIN, LEGACY_PAGE, PROCESS_LEGACY, LEGACY_PAGE]
    assert {r.verify for r in fake_http.requests} == {expected}
