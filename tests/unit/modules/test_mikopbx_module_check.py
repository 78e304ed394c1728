"""Unit tests of mikopbx_module_check: the HTTP boundary is faked (tests/unit/conftest.py); the client,
envelope parser, module classification and the module itself run for real."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.mikopbx.marketplace.plugins.module_utils import modules_state
from ansible_collections.mikopbx.marketplace.plugins.modules import mikopbx_module_check

B: Any = None
PBX_URL = "https://pbx.example.net"
V3 = "/pbxcore/api/v3/"
LEGACY = "/pbxcore/api/"
API_KEY = "c0ffee" * 10 + "abcd"
PASSWORD = "m0dule-Pa55"
KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"

SQL = V3 + "system:executeSqlRequest"
MARKET_V3 = V3 + "modules:getAvailableModules"
MARKET_LEGACY = LEGACY + "modules/core/getAvailableModules"
LEGACY_LOGIN = "/admin-cabinet/session/start"
LEGACY_PAGE = "/admin-cabinet/pbx-extension-modules/index"
CAPTURE_V3 = V3 + "license:captureFeatureForProductId"

LICENCE_TEXT = "The licence for this feature has expired"

ROWS = [
    {
        "uniqid": "ModuleUsersUI",
        "name": "Users",
        "version": "1.3.2",
        "disabled": "1",
        "disableReason": "DisabledByLicense",
        "disableReasonText": "2011: licence expired",
    },
    {
        "uniqid": "ModuleBackup",
        "name": "Backup",
        "version": "1.6.1",
        "disabled": "1",
        "disableReason": "",
        "disableReasonText": "",
    },
    {
        "uniqid": "ModuleAmoCrm",
        "name": "amoCRM",
        "version": "1.0.0",
        "disabled": "1",
        "disableReason": "DisabledByException",
        "disableReasonText": "Call to a member function on null",
    },
    {
        "uniqid": "ModuleAutoDialer",
        "name": "Auto dialer",
        "version": "1.1.5",
        "disabled": "1",
        "disableReason": "DisabledByCrashLoop",
        "disableReasonText": "restarted too often",
    },
    {
        "uniqid": "ModuleQueueCallBack",
        "name": "Queue call back",
        "version": "1.0.9",
        "disabled": "0",
        "disableReason": "DisabledByLicense",
        "disableReasonText": "2008: old",
    },
]


@pytest.fixture(autouse=True)
def _bodies(bodies: Any) -> None:
    global B
    B = bodies


def v3_args(**extra: Any) -> dict[str, Any]:
    return dict({"url": PBX_URL, "api_key": API_KEY, "validate_certs": False}, **extra)


def legacy_args(**extra: Any) -> dict[str, Any]:
    args = {"url": PBX_URL, "username": "admin", "password": PASSWORD, "validate_certs": False}
    args["api_generation"] = "legacy"
    return dict(args, **extra)


def run(
    capsys: pytest.CaptureFixture[str], args: dict[str, Any], *, check: bool = False, diff: bool = False
) -> tuple[dict, str]:
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    ansible_warnings._global_warnings.clear()
    ansible_warnings._global_deprecations.clear()
    with patch_module_args(args), pytest.raises(SystemExit):
        mikopbx_module_check.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def sql_reply(rows: list[dict[str, Any]]) -> Any:
    data = {"query": modules_state.MODULES_SQL, "database": "main", "rows": rows, "rowCount": len(rows)}
    return B.Reply(200, json=B.v3_ok(dict(data, affectedRows=0), function="executeSqlRequest"))


def market_ok(legacy: bool = False) -> Any:
    data = {"modules": [{"uniqid": "ModuleUsersUI"}, {"uniqid": "ModuleTemplate"}]}
    body = B.legacy_ok(data) if legacy else B.v3_ok(data)
    return B.Reply(200, json=body)


def v3_pbx(fake_http: Any, rows: list[dict[str, Any]] | None = None, market: Any = None) -> None:
    fake_http.set("POST", SQL, sql_reply(ROWS if rows is None else rows))
    fake_http.set("GET", MARKET_V3, market or market_ok())


def legacy_page_html(enabled_users: bool = False) -> str:
    def row(uniqid: str, checked: bool, icon: str = "") -> str:
        box = '<input type="checkbox"%s name="%s"/>' % (' checked="checked"' if checked else "", uniqid)
        return (
            '<tr class="module-row" data-id="%s" data-version="1.0"><td>%s</td>'
            '<td>%s<span class="module-name">%s</span></td></tr>' % (uniqid, box, icon, uniqid)
        )

    licence_icon = (
        '<span data-html="2011: licence expired"><i class="icons"><i class="big red dont icon"></i>'
        '<i class="key icon"></i></i></span>'
    )
    bug = '<span data-html="boom"><i class="red bug icon"></i></span>'
    rows = [
        row("ModuleUsersUI", enabled_users, "" if enabled_users else licence_icon),
        row("ModuleBackup", False),
        row("ModuleAmoCrm", False, bug),
        row("ModuleQueueCallBack", True),
    ]
    return (
        "<html><head><script>var globalPBXLicense = '%s'; var globalPBXVersion = '2024.1.114';</script></head>"
        '<body><table id="installed-modules-table"><tbody>%s</tbody></table></body></html>' % (KEY, "".join(rows))
    )


def legacy_pbx(fake_http: Any, pages: list[str] | None = None, market: Any = None) -> None:
    fake_http.set(
        "POST",
        LEGACY_LOGIN,
        B.Reply(
            200,
            json={"success": True, "reload": "/admin-cabinet/extensions/index", "message": []},
            cookies={"PHPSESSID": "sess1on-id-value"},
        ),
    )
    fake_http.set(
        "GET",
        LEGACY_PAGE,
        *[B.Reply(200, text=p, headers={"Content-Type": "text/html"}) for p in (pages or [legacy_page_html()])],
    )
    fake_http.set("GET", MARKET_LEGACY, market or market_ok(legacy=True))


def by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["uniqid"]: m for m in result["modules"]}


# ------------------------------------------------------------------ reading and classification


def test_v3_reads_with_one_select_and_classifies(fake_http, capsys):
    v3_pbx(fake_http)
    result, out = run(capsys, v3_args())

    assert result["changed"] is False
    assert result["generation"] == "v3"
    mods = by_id(result)
    assert mods["ModuleUsersUI"]["disable_reason"] == "licence" and mods["ModuleUsersUI"]["licence_problem"]
    assert mods["ModuleBackup"]["disable_reason"] == "user"
    assert mods["ModuleAmoCrm"]["disable_reason"] == "exception"
    assert mods["ModuleAutoDialer"]["disable_reason"] == "crash_loop"
    stale = mods["ModuleQueueCallBack"]
    assert stale["enabled"] and stale["licence_problem"] is False and stale["disable_reason_raw"] == "DisabledByLicense"
    assert [p["uniqid"] for p in result["licence_problems"]] == ["ModuleUsersUI"]
    assert result["summary"]["disabled"] == 4
    assert result["marketplace"]["status"] == "ok"
    assert result["remediation"] == []
    assert "1 disabled for lack of a licence (ModuleUsersUI)" in result["msg"]

    # Exactly two requests, and the only SQL is the module's constant SELECT.
    assert fake_http.calls() == [("POST", SQL), ("GET", MARKET_V3)]
    assert fake_http.requests[0].json == {"query": modules_state.MODULES_SQL, "database": "main"}
    assert API_KEY not in out


def test_legacy_reads_the_page_once(fake_http, capsys):
    legacy_pbx(fake_http)
    result, out = run(capsys, legacy_args())

    assert result["generation"] == "legacy"
    mods = by_id(result)
    assert mods["ModuleUsersUI"]["licence_problem"] is True
    assert mods["ModuleUsersUI"]["disable_reason_text"] == "2011: licence expired"
    assert mods["ModuleBackup"]["disable_reason"] == "user"
    assert mods["ModuleAmoCrm"]["disable_reason"] == "exception"
    assert mods["ModuleQueueCallBack"]["enabled"] is True
    assert fake_http.calls() == [("POST", LEGACY_LOGIN), ("GET", LEGACY_PAGE), ("GET", MARKET_LEGACY)]
    for secret in (PASSWORD, KEY, "sess1on-id-value"):
        assert secret not in out


def test_check_marketplace_false_skips_the_request(fake_http, capsys):
    v3_pbx(fake_http)
    result, _out = run(capsys, v3_args(check_marketplace=False))
    assert result["marketplace"]["status"] == "skipped"
    assert fake_http.calls() == [("POST", SQL)]


@pytest.mark.parametrize(
    "reply,status",
    [
        (
            dict(
                status=422,
                json={
                    "result": False,
                    "data": [],
                    "messages": [
                        "Failed to get data from https://releases.mikopbx.com: Could not resolve host: releases"
                    ],
                },
            ),
            "unreachable",
        ),
        (
            dict(
                status=422,
                json={
                    "result": False,
                    "data": [],
                    "messages": [
                        "Failed to get data from https://releases.mikopbx.com: The requested URL returned error: 503"
                    ],
                },
            ),
            "upstream_error",
        ),
        (
            dict(
                status=400,
                json={"result": False, "data": [], "messages": {"error": ["Request timeout or worker not responding"]}},
            ),
            "unreachable",
        ),
    ],
)
def test_marketplace_unreachable_is_told_from_an_upstream_error(fake_http, capsys, reply, status):
    v3_pbx(fake_http, market=B.Reply(**reply))
    result, _out = run(capsys, v3_args())
    assert result["marketplace"]["status"] == status
    assert result["marketplace"]["message"]
    # Not repeated by the client, even for a worker timeout.
    assert fake_http.count("GET", MARKET_V3) == 1
    assert "marketplace %s" % status in result["msg"]
    assert "failed" not in result


def test_marketplace_failure_fails_only_when_asked(fake_http, capsys):
    market = B.Reply(422, json={"result": False, "data": [], "messages": ["Could not resolve host: x"]})
    v3_pbx(fake_http, market=market)
    result, _out = run(capsys, v3_args(fail_on=["marketplace"]))
    assert result["failed"] is True
    assert "marketplace unreachable" in result["msg"]


def test_required_and_fail_on(fake_http, capsys):
    v3_pbx(fake_http)
    required = ["ModuleUsersUI", "moduleqUEUEcallback", "ModuleMissing", "ModuleBackup"]
    result, _out = run(capsys, v3_args(required=required))
    assert result["failed"] is True
    assert [(p["uniqid"], p["problem"]) for p in result["required_problems"]] == [
        ("ModuleUsersUI", "licence"),
        ("ModuleMissing", "not_installed"),
        ("ModuleBackup", "disabled"),
    ]
    assert "required modules not usable" in result["msg"]
    # The full report is still returned on failure.
    assert len(result["modules"]) == len(ROWS)

    result, _out = run(capsys, v3_args(required=required, fail_on=[]))
    assert "failed" not in result


@pytest.mark.parametrize("fail_on,fails", [(["licence"], True), (["exception"], True), (["crash_loop"], True)])
def test_fail_on_reasons(fake_http, capsys, fail_on, fails):
    v3_pbx(fake_http)
    result, _out = run(capsys, v3_args(fail_on=fail_on))
    assert result.get("failed", False) is fails


def test_user_disabled_and_stale_reason_never_fail(fake_http, capsys):
    rows = [ROWS[1], ROWS[4]]
    v3_pbx(fake_http, rows=rows)
    result, _out = run(capsys, v3_args(fail_on=["licence", "exception", "crash_loop", "required", "marketplace"]))
    assert "failed" not in result
    assert result["licence_problems"] == []


def test_query_selects_from_the_module_list(fake_http, capsys):
    v3_pbx(fake_http)
    result, _out = run(capsys, v3_args(query="[?!enabled && disable_reason!='user'].uniqid"))
    assert result["selected"] == ["ModuleAmoCrm", "ModuleAutoDialer", "ModuleUsersUI"]


def test_bad_query_fails_before_any_request(fake_http, capsys):
    result, _out = run(capsys, v3_args(query="[?licence_problem"))
    assert result["failed"] is True
    assert "JMESPath" in result["msg"]
    assert fake_http.requests == []


def test_missing_jmespath_is_reported(fake_http, capsys, monkeypatch):
    monkeypatch.setattr(mikopbx_module_check, "HAS_JMESPATH", False)
    result, _out = run(capsys, v3_args(query="[]"))
    assert result["failed"] is True
    assert "jmespath" in result["msg"]
    assert fake_http.requests == []


def test_sql_refused_for_a_restricted_key_fails_with_the_reason(fake_http, capsys):
    fake_http.set("POST", SQL, B.Reply(401, json={"result": False, "messages": {"error": ["Invalid token"]}}))
    result, out = run(capsys, v3_args())
    assert result["failed"] is True
    assert result["error"]["classification"] == "auth"
    assert PBX_URL in result["msg"]
    assert API_KEY not in out


# ------------------------------------------------------------------ remediation


def module_info(feature: int = 201, product: int = 101) -> Any:
    return B.Reply(200, json=B.v3_ok({"uniqid": "ModuleUsersUI", "lic_feature_id": feature, "lic_product_id": product}))


def test_remediation_captures_and_enables_once_then_rereads(fake_http, capsys):
    after = [dict(ROWS[0], disabled="0")] + ROWS[1:]
    fake_http.set("POST", SQL, sql_reply(ROWS), sql_reply(after))
    fake_http.set("GET", MARKET_V3, market_ok())
    fake_http.set("GET", V3 + "modules/ModuleUsersUI:getModuleInfo", module_info())
    fake_http.set("POST", CAPTURE_V3, B.Reply(200, json=B.v3_ok()))
    fake_http.set("POST", V3 + "modules/ModuleUsersUI:enable", B.Reply(200, json=B.v3_ok()))

    result, _out = run(capsys, v3_args(remediate=True))

    assert result["changed"] is True
    [entry] = result["remediation"]
    assert entry == {
        "uniqid": "ModuleUsersUI",
        "attempted": True,
        "captured": True,
        "result": "enabled",
        "message": "enabled after capturing its licence feature (if the company had no paid licence for it, "
        "MikoPBX started the product's one-time trial: check the products with mikopbx_license_info)",
    }
    # captureFeatureForProductId adds the product's trial when no paid licence is available: say so.
    assert "one-time trial" in result["msg"] and "ModuleUsersUI" in result["msg"]
    assert by_id(result)["ModuleUsersUI"]["enabled"] is True
    assert result["licence_problems"] == []
    capture = [r for r in fake_http.requests if r.path == CAPTURE_V3][0]
    assert capture.json == {"licFeatureId": 201, "licProductId": 101}
    # Only the licence-disabled module is touched; each write exactly once.
    assert fake_http.count("POST", V3 + "modules/ModuleUsersUI:enable") == 1
    assert fake_http.count("POST", CAPTURE_V3) == 1
    assert not [r for r in fake_http.requests if ":enable" in r.path and "ModuleUsersUI" not in r.path]
    assert fake_http.count("POST", SQL) == 2


def test_remediation_leaves_the_module_alone_when_the_licence_is_still_unavailable(fake_http, capsys):
    v3_pbx(fake_http)
    fake_http.set("GET", V3 + "modules/ModuleUsersUI:getModuleInfo", module_info())
    fake_http.set("POST", CAPTURE_V3, B.Reply(422, json=B.v3_fail({"license": [LICENCE_TEXT]})))

    result, _out = run(capsys, v3_args(remediate=True))

    assert result["changed"] is False
    [entry] = result["remediation"]
    assert entry["attempted"] is True and entry["result"] == "licence_unavailable"
    assert LICENCE_TEXT in entry["message"] and "left disabled" in entry["message"]
    # No enable after a refused capture, no retry of the capture.
    assert fake_http.count("POST", CAPTURE_V3) == 1
    assert not [r for r in fake_http.requests if r.path.endswith(":enable")]
    assert by_id(result)["ModuleUsersUI"]["licence_problem"] is True


def test_remediation_without_licence_ids_tries_enable_once(fake_http, capsys):
    v3_pbx(fake_http)
    fake_http.set(
        "GET", V3 + "modules/ModuleUsersUI:getModuleInfo", B.Reply(422, json=B.v3_fail(["Wrong module info"]))
    )
    fake_http.set(
        "POST",
        V3 + "modules/ModuleUsersUI:enable",
        B.Reply(422, json=B.v3_fail({"license": [LICENCE_TEXT]}, function="enable")),
    )

    result, _out = run(capsys, v3_args(remediate=True))

    [entry] = result["remediation"]
    assert entry["result"] == "licence_unavailable" and entry["captured"] is False
    assert fake_http.count("POST", V3 + "modules/ModuleUsersUI:enable") == 1
    assert fake_http.count("POST", CAPTURE_V3) == 0
    assert result["changed"] is False


def test_remediation_other_enable_failure(fake_http, capsys):
    v3_pbx(fake_http)
    fake_http.set("GET", V3 + "modules/ModuleUsersUI:getModuleInfo", module_info(0, 0))
    fake_http.set(
        "POST",
        V3 + "modules/ModuleUsersUI:enable",
        B.Reply(422, json=B.v3_fail({"error": ["Module folder is missing"]})),
    )
    result, _out = run(capsys, v3_args(remediate=True))
    [entry] = result["remediation"]
    assert entry["result"] == "failed" and "Module folder is missing" in entry["message"]


def test_remediation_in_check_mode_sends_no_write(fake_http, capsys):
    v3_pbx(fake_http)
    result, _out = run(capsys, v3_args(remediate=True), check=True)
    assert result["changed"] is True
    [entry] = result["remediation"]
    assert entry["attempted"] is False and entry["result"] == "skipped_check_mode"
    # The capture may start the product's one-time trial: check mode warns before it happens.
    assert "one-time trial" in entry["message"]
    assert "check mode: would try to bring back ModuleUsersUI" in result["msg"] and "trial" in result["msg"]
    assert fake_http.calls() == [("POST", SQL), ("GET", MARKET_V3)]


def test_remediation_with_nothing_to_do(fake_http, capsys):
    v3_pbx(fake_http, rows=ROWS[1:])
    result, _out = run(capsys, v3_args(remediate=True))
    assert result["changed"] is False and result["remediation"] == []
    assert fake_http.calls() == [("POST", SQL), ("GET", MARKET_V3)]


def test_legacy_remediation_uses_form_posts_and_rereads_the_page(fake_http, capsys):
    legacy_pbx(fake_http, pages=[legacy_page_html(), legacy_page_html(enabled_users=True)])
    fake_http.set(
        "POST",
        LEGACY + "modules/core/getModuleInfo",
        B.Reply(200, json=B.legacy_ok({"lic_feature_id": "201", "lic_product_id": "101"})),
    )
    fake_http.set("POST", LEGACY + "license/captureFeatureForProductId", B.Reply(200, json=B.legacy_ok()))
    fake_http.set("POST", LEGACY + "modules/core/enableModule", B.Reply(200, json=B.legacy_ok()))

    result, _out = run(capsys, legacy_args(remediate=True))

    assert result["changed"] is True
    assert result["remediation"][0]["result"] == "enabled"
    assert by_id(result)["ModuleUsersUI"]["enabled"] is True
    enable = [r for r in fake_http.requests if r.path.endswith("enableModule")]
    assert len(enable) == 1 and enable[0].form == {"uniqid": ["ModuleUsersUI"]}
    capture = [r for r in fake_http.requests if r.path.endswith("captureFeatureForProductId")][0]
    assert capture.form == {"licFeatureId": ["201"], "licProductId": ["101"]}
    assert fake_http.count("GET", LEGACY_PAGE) == 2


def test_remediation_write_timeout_is_reported_not_repeated(fake_http, capsys):
    import requests

    after = [dict(ROWS[0], disabled="0")] + ROWS[1:]
    fake_http.set("POST", SQL, sql_reply(ROWS), sql_reply(after))
    fake_http.set("GET", MARKET_V3, market_ok())
    fake_http.set("GET", V3 + "modules/ModuleUsersUI:getModuleInfo", module_info(0, 0))
    fake_http.set("POST", V3 + "modules/ModuleUsersUI:enable", requests.exceptions.ReadTimeout("read timed out"))

    result, _out = run(capsys, v3_args(remediate=True))

    [entry] = result["remediation"]
    assert "did not complete" in entry["message"]
    assert fake_http.count("POST", V3 + "modules/ModuleUsersUI:enable") == 1
    # The re-read shows where the write ended: the PBX did enable it.
    assert by_id(result)["ModuleUsersUI"]["enabled"] is True
    assert entry["result"] == "enabled" and "enabled now" in entry["message"]
    assert result["changed"] is True
    assert fake_http.count("POST", SQL) == 2


def test_marketplace_check_that_times_out_on_the_controller_is_unreachable(fake_http, capsys):
    import requests

    v3_pbx(fake_http, market=requests.exceptions.ReadTimeout("read timed out"))
    result, _out = run(capsys, v3_args())
    assert result["marketplace"]["status"] == "unreachable"
    assert fake_http.count("GET", MARKET_V3) == 1
    assert result["modules"]


def test_diff_shows_the_modules_remediation_brought_back(fake_http, capsys):
    after = [dict(ROWS[0], disabled="0")] + ROWS[1:]
    fake_http.set("POST", SQL, sql_reply(ROWS), sql_reply(after))
    fake_http.set("GET", MARKET_V3, market_ok())
    fake_http.set("GET", V3 + "modules/ModuleUsersUI:getModuleInfo", module_info())
    fake_http.set("POST", CAPTURE_V3, B.Reply(200, json=B.v3_ok()))
    fake_http.set("POST", V3 + "modules/ModuleUsersUI:enable", B.Reply(200, json=B.v3_ok()))

    result, _out = run(capsys, v3_args(remediate=True), diff=True)

    assert result["diff"] == {
        "before": {"modules": {"ModuleUsersUI": {"enabled": False, "disable_reason": "licence"}}},
        "after": {"modules": {"ModuleUsersUI": {"enabled": True, "disable_reason": None}}},
    }


def test_diff_in_check_mode_is_the_plan_and_absent_without_remediation(fake_http, capsys):
    v3_pbx(fake_http)
    result, _out = run(capsys, v3_args(remediate=True), check=True, diff=True)
    assert result["diff"]["after"]["modules"] == {"ModuleUsersUI": {"enabled": True, "disable_reason": None}}

    result, _out = run(capsys, v3_args(), diff=True)
    assert "diff" not in result
