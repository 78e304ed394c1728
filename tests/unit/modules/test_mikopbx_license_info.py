"""mikopbx_license_info end to end on the fake transport: the module, client, envelope parser and
licence parsing all run; only the network is replaced."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args
from mikopbx_fakes import (
    LEGACY,
    PBX_URL,
    V3,
    Reply,
    legacy_fail,
    legacy_ok,
    license_info_string,
    v3_fail,
    v3_ok,
)

from ansible_collections.mikopbx.marketplace.plugins.modules import mikopbx_license_info

KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"
API_KEY = "c3" * 32
PASSWORD = "An0ther-Pa55"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VySWQiOiJhZG1pbiJ9.c2lnLWp3dA"
REFRESH = "e" * 64
PHPSESSID = "legacysess0000000000001"
SQL = V3 + "system:executeSqlRequest"
INFO_V3 = V3 + "license:getLicenseInfo"
INFO_LEGACY = LEGACY + "license/getLicenseInfo"
LEGACY_LOGIN = "/admin-cabinet/session/start"
LEGACY_PAGE = "/admin-cabinet/pbx-extension-modules/index"
SECRETS = (KEY, API_KEY, PASSWORD, JWT, REFRESH, PHPSESSID)


def run(
    capsys: pytest.CaptureFixture[str],
    args: dict[str, Any],
    *,
    check: bool = False,
    no_log: bool = False,
    verbosity: int = 0,
) -> tuple[dict[str, Any], str]:
    args = dict(args, _ansible_check_mode=check, _ansible_no_log=no_log, _ansible_verbosity=verbosity)
    ansible_warnings._global_warnings.clear()
    ansible_warnings._global_deprecations.clear()
    with patch_module_args(args), pytest.raises(SystemExit):
        mikopbx_license_info.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def v3_args(**extra: Any) -> dict[str, Any]:
    return dict({"url": PBX_URL, "api_key": API_KEY, "validate_certs": False}, **extra)


def login_args(**extra: Any) -> dict[str, Any]:
    return dict({"url": PBX_URL, "username": "admin", "password": PASSWORD, "validate_certs": False}, **extra)


def settings_rows(key: str) -> Reply:
    rows = [{"key": "PBXVersion", "value": "2026.1.223"}, {"key": "Name", "value": "PBX system"}]
    if key:
        rows.append({"key": "PBXLicense", "value": key})
    return Reply(json=v3_ok({"rows": rows, "rowCount": len(rows), "affectedRows": 0}, "executeSqlRequest"))


def legacy_page(key: str) -> Reply:
    return Reply(
        text="<script>var globalPBXLicense = '%s';\nvar globalPBXVersion = '2024.1.114';</script>" % key,
        headers={"Content-Type": "text/html"},
    )


TRIAL_MODULE = {
    "@attributes": {"name": "Module Example", "expired": "2099-12-31", "trial": "1"},
    "feature": [
        {"@attributes": {"name": "Feature A", "count": "5", "counteach": "1", "captured": "2"}},
        {"@attributes": {"name": "Feature B", "count": "1", "counteach": "0", "captured": "0"}},
    ],
}


def assert_no_secrets(out: str) -> None:
    for secret in SECRETS:
        assert secret not in out


# ------------------------------------------------------------------ v3


def test_v3_bound_key_with_api_key_costs_two_requests(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows(KEY))
    fake_http.add(
        "GET",
        INFO_V3,
        Reply(json=v3_ok({"licenseInfo": license_info_string(KEY, 10, 4, [TRIAL_MODULE])}, "getLicenseInfo")),
    )
    result, out = run(capsys, v3_args())

    assert result["changed"] is False
    assert result["generation"] == "v3"
    assert result["version"] == "2026.1.223"
    assert result["has_license_key"] is True
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-DDDDD"
    assert result["binding_status"] == "ok"
    assert result["owner"]["companyname"] == "Example LLC"
    assert result["seats"] == {"count": 10, "captured": 4, "free": 6, "host_limit": 10}
    names = [p["name"] for p in result["products"]]
    assert names == ["MikoPBX", "Module Example"]
    assert result["products"][1]["features"][0] == {
        "name": "Feature A",
        "id": None,
        "count": 5,
        "counteach": 1,
        "captured": 2,
        "free": 3,
    }
    assert result["expiry"]["name"] == "Module Example"
    assert result["licence_error"] is None
    assert "4 of 10 seats" in result["msg"]
    assert "license_key" not in result
    assert len(fake_http.requests) <= 3
    assert fake_http.calls() == [("POST", SQL), ("GET", INFO_V3)]
    assert_no_secrets(out)


def test_v3_no_key_is_unbound_without_licence_call(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows(""))
    result = run(capsys, v3_args())[0]
    assert result["binding_status"] == "unbound"
    assert result["has_license_key"] is False
    assert result["license_key_masked"] is None
    assert result["products"] == [] and result["seats"]["count"] is None
    assert fake_http.calls() == [("POST", SQL)]


def test_v3_key_bound_elsewhere_is_binding_required(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows(KEY))
    fake_http.add(
        "GET", INFO_V3, Reply(422, json=v3_fail(["2008: the feature is captured by another machine"], "getLicenseInfo"))
    )
    result, out = run(capsys, v3_args())
    assert result.get("failed") is not True
    assert result["binding_status"] == "binding_required"
    assert result["licence_error"]["code"] == 2008
    assert "licence cabinet" in result["licence_error"]["hint"]
    assert fake_http.count("GET", INFO_V3) == 1  # a 422 licence error is not retried
    assert_no_secrets(out)


def test_v3_licensing_unreachable_is_unknown_with_the_error(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows(KEY))
    fake_http.add(
        "GET",
        INFO_V3,
        Reply(
            422,
            json=v3_fail(
                ["The licensing server did not answer. Check the Internet connection settings of the station"]
            ),
        ),
    )
    result = run(capsys, v3_args())[0]
    assert result["binding_status"] == "unknown"
    assert result["licence_error"]["classification"] == "unreachable"
    assert "443" in result["licence_error"]["hint"]


def test_v3_password_login_masks_tokens_at_high_verbosity(capsys, fake_http):
    fake_http.add(
        "POST",
        V3 + "auth:login",
        Reply(
            json=v3_ok({"accessToken": JWT, "tokenType": "Bearer", "expiresIn": 900}), cookies={"refreshToken": REFRESH}
        ),
    )
    fake_http.add("POST", SQL, settings_rows(KEY))
    fake_http.add("GET", INFO_V3, Reply(json=v3_ok({"licenseInfo": license_info_string(KEY)})))
    result, out = run(capsys, login_args(), verbosity=4)
    assert result["binding_status"] == "ok"
    assert len(fake_http.requests) == 3
    assert_no_secrets(out)


# ------------------------------------------------------------------ legacy


def legacy_pbx(fake_http, key: str = KEY) -> None:
    fake_http.add(
        "POST",
        LEGACY_LOGIN,
        Reply(
            json={"success": True, "reload": "/admin-cabinet/extensions/index", "message": []},
            cookies={"PHPSESSID": PHPSESSID},
        ),
    )
    fake_http.add("GET", LEGACY_PAGE, legacy_page(key))


def test_legacy_bound_key(capsys, fake_http):
    legacy_pbx(fake_http)
    fake_http.add(
        "GET", INFO_LEGACY, Reply(json=legacy_ok({"licenseInfo": license_info_string(KEY, 10, 1)}, "getLicenseInfo"))
    )
    result, out = run(capsys, login_args(api_generation="legacy"))
    assert result["generation"] == "legacy"
    assert result["version"] == "2024.1.114"
    assert result["binding_status"] == "ok"
    assert result["seats"]["captured"] == 1
    assert fake_http.paths() == [LEGACY_LOGIN, LEGACY_PAGE, INFO_LEGACY]
    assert_no_secrets(out)


def test_legacy_auto_detection_and_licence_2008_at_http_200(capsys, fake_http):
    fake_http.add(
        "POST", V3 + "auth:login", Reply(404, json={"jsonapi": {"version": "1.0"}, "errors": ["404 (Not Found)"]})
    )
    legacy_pbx(fake_http)
    fake_http.add(
        "GET",
        INFO_LEGACY,
        Reply(
            json=legacy_fail(
                {"license": ["Required licence is missing or bound to a different MikoPBX"]}, "getLicenseInfo"
            )
        ),
    )
    result = run(capsys, login_args())[0]
    assert result["generation"] == "legacy"
    assert result["binding_status"] == "binding_required"


# ------------------------------------------------------------------ options and failures


def test_reveal_requires_no_log_and_sends_nothing(capsys, fake_http):
    result, out = run(capsys, v3_args(reveal_license_key=True))
    assert result["failed"] is True
    assert "no_log" in result["msg"]
    assert fake_http.requests == []


def test_reveal_with_no_log_returns_the_clear_key(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows(" miko-aaaaa-bbbbb-ccccc-ddddd "))
    fake_http.add("GET", INFO_V3, Reply(json=v3_ok({"licenseInfo": license_info_string(KEY)})))
    result = run(capsys, v3_args(reveal_license_key=True), no_log=True)[0]
    assert result["license_key"] == KEY
    assert result["license_key_masked"] == "MIKO-*****-*****-*****-DDDDD"


def test_check_mode_reads_the_same(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows(KEY))
    fake_http.add("GET", INFO_V3, Reply(json=v3_ok({"licenseInfo": license_info_string(KEY)})))
    result = run(capsys, v3_args(), check=True)[0]
    assert result["binding_status"] == "ok" and result["changed"] is False


def test_rejected_login_fails_with_a_useful_message(capsys, fake_http):
    fake_http.add(
        "POST", V3 + "auth:login", Reply(401, json=v3_fail({"error": ["Invalid login or password"]}, "login", 401))
    )
    result, out = run(capsys, login_args())
    assert result["failed"] is True
    assert PBX_URL in result["msg"] and "read the PBX settings" in result["msg"]
    assert "credentials rejected" in result["msg"] and "HTTP 401" in result["msg"]
    assert result["error"]["classification"] == "auth"
    assert fake_http.count("POST", V3 + "auth:login") == 1
    assert_no_secrets(out)


def test_certificate_failure_is_reported_as_tls(capsys, fake_http):
    fake_http.add(
        "POST",
        SQL,
        requests.exceptions.SSLError(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1000)"
        ),
    )
    result = run(capsys, dict(v3_args(), validate_certs=True))[0]
    assert result["failed"] is True
    assert result["error"]["classification"] == "tls"
    assert "certificate verify failed" in result["msg"]
    assert fake_http.requests[0].verify is not False


def test_api_key_rejected_on_the_licence_read_fails(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows(KEY))
    fake_http.add("GET", INFO_V3, Reply(401, json=v3_fail({"error": ["The user isn't authenticated."]})))
    result, out = run(capsys, v3_args())
    assert result["failed"] is True
    assert result["error"]["classification"] == "auth"
    assert_no_secrets(out)


def test_legacy_silent_licence_failure_is_explained_by_the_feature_check(capsys, fake_http):
    legacy_pbx(fake_http)
    fake_http.add("GET", INFO_LEGACY, Reply(json=legacy_fail([], "getLicenseInfo")))
    fake_http.add(
        "GET",
        LEGACY + "license/getMikoPBXFeatureStatus",
        Reply(
            json=legacy_fail(
                {"license": ["The required licence is missing, or it is bound to a different MikoPBX station"]},
                "getMikoPBXFeatureStatus",
            )
        ),
    )
    result, out = run(capsys, login_args(api_generation="legacy"))
    assert result["binding_status"] == "binding_required"
    assert result["licence_error"]["code"] == 2008
    assert fake_http.paths() == [LEGACY_LOGIN, LEGACY_PAGE, INFO_LEGACY, LEGACY + "license/getMikoPBXFeatureStatus"]
    assert_no_secrets(out)


def test_legacy_silent_failure_with_healthy_feature_is_unknown(capsys, fake_http):
    legacy_pbx(fake_http)
    fake_http.add("GET", INFO_LEGACY, Reply(json=legacy_fail([], "getLicenseInfo")))
    fake_http.add("GET", LEGACY + "license/getMikoPBXFeatureStatus", Reply(json=legacy_ok([], "x")))
    result = run(capsys, login_args(api_generation="legacy"))[0]
    assert result["binding_status"] == "unknown"
    assert result["licence_error"]["classification"] == "server"


def test_malformed_stored_key_is_reported_not_looked_up(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows("MIKO-AAAAA-BBBBB"))
    result, out = run(capsys, v3_args())
    assert result.get("failed") is not True
    assert result["binding_status"] == "unknown"
    assert result["license_key_masked"] == "*****"
    assert result["licence_error"]["classification"] == "invalid_input"
    assert fake_http.calls() == [("POST", SQL)]
    assert "BBBBB" not in out


@pytest.mark.parametrize(
    "raw, words",
    [
        ("0: SSL certificate problem: self-signed certificate in certificate chain", "inspect"),
        ("0: Could not resolve host: lic.mikopbx.com", "DNS"),
        ("0: Connection timed out: lic.mikopbx.com:443", "443"),
        ("503: Service Unavailable", "retry later"),
    ],
)
def test_v3_licensing_connectivity_failures_are_unknown(capsys, fake_http, raw, words):
    fake_http.add("POST", SQL, settings_rows(KEY))
    fake_http.add("GET", INFO_V3, Reply(422, json=v3_fail([raw], "getLicenseInfo")))
    result = run(capsys, v3_args())[0]
    assert result["binding_status"] == "unknown"
    assert result["licence_error"]["classification"] == "unreachable"
    assert words in result["licence_error"]["hint"]


# ------------------------------------------------------------------ optional sections

BASH = V3 + "system:executeBashCommand"
PING_V3 = V3 + "license:ping"
LICENCE_OK = Reply(json=v3_ok({"licenseInfo": license_info_string(KEY, 10, 4, [])}, "getLicenseInfo"))
MODULE_ROWS = [
    {
        "uniqid": "ModuleUsersUI",
        "name": "Users",
        "version": "1.0",
        "disabled": "1",
        "disableReason": "DisabledByLicense",
    },
    {"uniqid": "ModuleBackup", "name": "Backup", "version": "2.0", "disabled": "0", "disableReason": ""},
]


def probe_reply(*lines: tuple[str, int, str, str]) -> Any:
    def reply(request: Any) -> Reply:
        output = "".join("MIKOPBX-PROBE\t%s\t%s\t%s\t%s\n" % line for line in lines)
        data = {"command": request.json["command"], "output": output, "exitCode": 0}
        return Reply(json=v3_ok(data, "executeBashCommand"))

    return reply


def modules_rows(rows: list[dict[str, Any]]) -> Reply:
    return Reply(json=v3_ok({"rows": rows, "rowCount": len(rows), "affectedRows": 0}, "executeSqlRequest"))


def test_sections_read_reachability_and_modules_in_the_same_run(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows(KEY), modules_rows(MODULE_ROWS))
    fake_http.add("GET", INFO_V3, LICENCE_OK)
    fake_http.add("POST", BASH, probe_reply(("lic.miko.ru", 0, "200", ""), ("lic.mikopbx.com", 28, "000", "timeout")))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok(function="ping")))

    result, out = run(capsys, v3_args(reachability={"probe_timeout": 3}, modules={"required": ["ModuleUsersUI"]}))

    assert result.get("failed") is not True, result
    assert result["binding_status"] == "ok"
    reach = result["reachability"]
    assert reach["method"] == "pbx_probe" and reach["reachable"] is False
    assert reach["first_failure"]["host"] == "lic.mikopbx.com" and reach["first_failure"]["stage"] == "tcp"
    assert reach["license_ping"]["ok"] is True
    assert "changed" not in reach and "generation" not in reach
    modules = result["modules"]
    assert [m["uniqid"] for m in modules["modules"]] == ["ModuleBackup", "ModuleUsersUI"]  # sorted by id
    assert [p["uniqid"] for p in modules["licence_problems"]] == ["ModuleUsersUI"]
    assert [(p["uniqid"], p["problem"]) for p in modules["required_problems"]] == [("ModuleUsersUI", "licence")]
    assert modules["marketplace"]["status"] == "skipped" and modules["remediation"] == []
    assert fake_http.calls() == [("POST", SQL), ("GET", INFO_V3), ("POST", BASH), ("GET", PING_V3), ("POST", SQL)]
    assert "SELECT uniqid" in fake_http.requests[-1].json["query"]
    assert_no_secrets(out)


def test_a_failed_modules_read_is_reported_in_its_section(capsys, fake_http):
    fake_http.add("POST", SQL, settings_rows(KEY), Reply(json=v3_ok({"unexpected": True}, "executeSqlRequest")))
    fake_http.add("GET", INFO_V3, LICENCE_OK)

    result, out = run(capsys, v3_args(modules={}))

    assert result.get("failed") is not True
    assert result["binding_status"] == "ok" and result["seats"]["count"] == 10
    section = result["modules"]
    assert section["failed"] is True
    assert "failed to read the installed modules" in section["msg"] and "without rows" in section["msg"]
    assert section["error"]["classification"] == "server"
    assert "reachability" not in result
    assert_no_secrets(out)


@pytest.mark.parametrize(
    "options, words",
    [
        ({"hosts": ["lic.mikopbx.com:443"]}, "lic.mikopbx.com:443"),
        ({"probe_timeout": 60}, "probe_timeout"),
    ],
)
def test_bad_reachability_options_fail_before_any_request(capsys, fake_http, options, words):
    result = run(capsys, v3_args(reachability=options))[0]
    assert result["failed"] is True
    assert result["msg"].startswith("reachability: ") and words in result["msg"], result["msg"]
    assert "nothing was sent" in result["msg"]
    assert fake_http.requests == []
