"""Installed-module rows, disable-reason classification, the 2024.1 page parser and the checks."""

from __future__ import annotations

import pytest

from ansible_collections.mikopbx.marketplace.plugins.module_utils import modules_state as ms

# Rows as system:executeSqlRequest returns them on 2026.1 (strings, as SQLite hands them over).
SQL_ROWS = [
    {
        "uniqid": "ModuleUsersUI",
        "name": "Users and access rights",
        "version": "1.2.3",
        "disabled": "1",
        "disableReason": "DisabledByLicense",
        "disableReasonText": "License expired (2011)",
    },
    {
        "uniqid": "ModuleBackup",
        "name": "Backup",
        "version": "2.0.1",
        "disabled": "1",
        "disableReason": "",
        "disableReasonText": "",
    },
    {
        "uniqid": "ModuleAmoCrm",
        "name": "amoCRM",
        "version": "1.0.9",
        "disabled": "1",
        "disableReason": "DisabledByException",
        "disableReasonText": "Call to undefined method",
    },
    {
        "uniqid": "ModuleAutoDialer",
        "name": "Auto dialer",
        "version": "1.4.0",
        "disabled": "1",
        "disableReason": "DisabledByCrashLoop",
        "disableReasonText": "restarted 5 times in 60 s",
    },
    {
        "uniqid": "ModuleTelegramProvider",
        "name": "Telegram",
        "version": "1.1.0",
        "disabled": "0",
        "disableReason": "DisabledByLicense",
        "disableReasonText": "old licence error",
    },
    {
        "uniqid": "ModuleTemplate",
        "name": "Template",
        "version": "1.0.0",
        "disabled": "0",
        "disableReason": None,
        "disableReasonText": None,
    },
]


def by_id(rows):
    return {row["uniqid"]: row for row in rows}


def test_sql_is_one_constant_select():
    assert ms.MODULES_SQL.startswith("SELECT ")
    assert "m_PbxExtensionModules" in ms.MODULES_SQL
    assert ";" not in ms.MODULES_SQL
    for word in ("INSERT", "UPDATE", "DELETE", "DROP", "ATTACH", "PRAGMA", "REPLACE"):
        assert word not in ms.MODULES_SQL.upper()


def test_v3_rows_are_classified():
    rows = by_id(ms.rows_from_sql(SQL_ROWS))

    assert rows["ModuleUsersUI"]["enabled"] is False
    assert rows["ModuleUsersUI"]["disable_reason"] == "licence"
    assert rows["ModuleUsersUI"]["licence_problem"] is True
    assert rows["ModuleUsersUI"]["disable_reason_text"] == "License expired (2011)"

    # 2026.1 stores an empty reason when a user disables a module.
    assert rows["ModuleBackup"]["disable_reason"] == "user"
    assert rows["ModuleBackup"]["disable_reason_raw"] is None
    assert rows["ModuleBackup"]["licence_problem"] is False

    assert rows["ModuleAmoCrm"]["disable_reason"] == "exception"
    assert rows["ModuleAutoDialer"]["disable_reason"] == "crash_loop"
    assert rows["ModuleAutoDialer"]["licence_problem"] is False


def test_stale_licence_reason_on_an_enabled_module_is_not_a_problem():
    row = by_id(ms.rows_from_sql(SQL_ROWS))["ModuleTelegramProvider"]
    assert row["enabled"] is True
    assert row["disable_reason"] is None
    assert row["disable_reason_raw"] == "DisabledByLicense"
    assert row["licence_problem"] is False


def test_rows_are_sorted_and_junk_is_skipped():
    rows = ms.rows_from_sql(SQL_ROWS + [{"uniqid": ""}, "junk", {"name": "no id"}])
    assert [r["uniqid"] for r in rows] == sorted(r["uniqid"] for r in SQL_ROWS)
    assert ms.rows_from_sql(None) == []


@pytest.mark.parametrize("flag,enabled", [("0", True), ("1", False), (0, True), (1, False), (True, False), ("", True)])
def test_disabled_flag_forms(flag, enabled):
    [row] = ms.rows_from_sql([{"uniqid": "ModuleX", "disabled": flag, "disableReason": "DisabledByUser"}])
    assert row["enabled"] is enabled
    assert row["disable_reason"] == (None if enabled else "user")


def test_unknown_reason_is_kept_visible():
    [row] = ms.rows_from_sql([{"uniqid": "ModuleX", "disabled": "1", "disableReason": "DisabledBySomethingNew"}])
    assert row["disable_reason"] == "other"
    assert row["disable_reason_raw"] == "DisabledBySomethingNew"
    assert ms.summarise([row])["disabled_by_other"] == 1


# ---------------------------------------------------------------------------------------------
# 2024.1 admin page

LEGACY_PAGE = """<!DOCTYPE html>
<html><head><title>Modules</title>
<script>var globalPBXLicense = 'MIKO-AAAAA-BBBBB-CCCCC-DDDDD'; var globalPBXVersion = '2024.1.114';</script>
</head><body>
<div class="ui tab" data-tab="installed">
<table class="ui very basic table" id="installed-modules-table">
<thead><tr><th>Name</th><th>Version</th><th></th></tr></thead>
<tbody>
<tr class="module-row" data-id="ModuleUsersUI" data-version="1.2.3">
  <td class="collapsing">Users &amp; access rights
    <span class="disability" data-html="Licence expired&lt;br&gt;(code 2011)" data-variation="wide">
      <i class="icons"><i class="big red dont icon"></i><i class="key icon"></i></i>
    </span>
  </td>
  <td>1.2.3</td>
  <td class="right aligned"><div class="ui toggle checkbox"><input type="checkbox" name="ModuleUsersUI"></div></td>
</tr>
<tr class="module-row" data-id="ModuleBackup" data-version="2.0.1">
  <td>Backup</td><td>2.0.1</td>
  <td><div class="ui toggle checkbox"><input type="checkbox" name="ModuleBackup"/></div></td>
</tr>
<tr class="module-row" data-id="ModuleAmoCrm" data-version="1.0.9">
  <td>amoCRM <i class="large red bug icon" data-html="<b>Exception</b>: Call to undefined method"></i></td>
  <td>1.0.9</td>
  <td><div class="ui toggle checkbox"><input type="checkbox" name="ModuleAmoCrm"></div></td>
</tr>
<tr class="module-row" data-id="ModuleTelegramProvider" data-version="1.1.0">
  <td>Telegram</td><td>1.1.0</td>
  <td><div class="ui toggle checkbox"><input type="checkbox" checked="checked" name="ModuleTelegramProvider"></div></td>
</tr>
<tr class="module-row" data-id="ModuleTemplate" data-version="1.0.0">
  <td>Template</td><td>1.0.0</td>
  <td><div class="ui toggle checkbox"><input type="checkbox" checked name="ModuleTemplate"></div></td>
</tr>
</tbody></table></div>
<table id="marketplace"><tr class="new-module-row" data-id="ModuleOther"><td>Other</td></tr></table>
</body></html>
"""


def test_legacy_page_rows():
    rows = by_id(ms.rows_from_admin_page(LEGACY_PAGE))
    assert sorted(rows) == ["ModuleAmoCrm", "ModuleBackup", "ModuleTelegramProvider", "ModuleTemplate", "ModuleUsersUI"]

    users = rows["ModuleUsersUI"]
    assert users["name"] == "Users & access rights"
    assert users["version"] == "1.2.3"
    assert users["enabled"] is False
    assert users["disable_reason"] == "licence"
    assert users["disable_reason_raw"] == "DisabledByLicense"
    assert users["disable_reason_text"] == "Licence expired (code 2011)"
    assert users["licence_problem"] is True

    assert rows["ModuleBackup"]["disable_reason"] == "user"
    assert rows["ModuleBackup"]["disable_reason_raw"] == "DisabledByUser"
    assert rows["ModuleAmoCrm"]["disable_reason"] == "exception"
    assert rows["ModuleAmoCrm"]["disable_reason_text"] == "Exception: Call to undefined method"
    assert rows["ModuleAmoCrm"]["name"] == "amoCRM"
    assert rows["ModuleTelegramProvider"]["enabled"] is True
    assert rows["ModuleTemplate"]["enabled"] is True
    assert rows["ModuleTemplate"]["disable_reason"] is None


def test_legacy_page_crash_loop_icon_and_stale_key_on_enabled_module():
    page = """<table>
    <tr class="module-row" data-id="ModuleA" data-version="1"><td>A
      <i class="red redo icon" data-html="crash loop"></i></td><td><input type="checkbox"></td></tr>
    <tr class="module-row" data-id="ModuleB" data-version="2"><td>B
      <i class="icons" data-html="old"><i class="red dont icon"></i><i class="key icon"></i></i></td>
      <td><input type="checkbox" checked></td></tr>
    </table>"""
    rows = by_id(ms.rows_from_admin_page(page))
    assert rows["ModuleA"]["disable_reason"] == "crash_loop"
    assert rows["ModuleA"]["disable_reason_text"] == "crash loop"
    assert rows["ModuleB"]["enabled"] is True
    assert rows["ModuleB"]["disable_reason"] is None
    assert rows["ModuleB"]["disable_reason_raw"] == "DisabledByLicense"
    assert rows["ModuleB"]["licence_problem"] is False


def test_dont_icon_without_key_is_not_a_licence_mark():
    page = """<tr class="module-row" data-id="ModuleA" data-version="1"><td>A <i class="red dont icon"></i></td>
    <td><input type="checkbox"></td></tr>"""
    [row] = ms.rows_from_admin_page(page)
    assert row["disable_reason"] == "user"


def test_legacy_page_without_rows_and_page_detection():
    assert ms.rows_from_admin_page("<html><body>No modules</body></html>") == []
    assert ms.rows_from_admin_page("") == []
    assert ms.looks_like_modules_page(LEGACY_PAGE)
    assert not ms.looks_like_modules_page("<form id='login-form'></form>")


def test_html_to_text():
    assert ms.html_to_text("a<br>b &amp; <b>c</b>") == "a b & c"
    assert ms.html_to_text(None) == ""


# ---------------------------------------------------------------------------------------------
# summary, required, fail_on


def test_summary_and_licence_problems():
    rows = ms.rows_from_sql(SQL_ROWS)
    summary = ms.summarise(rows)
    assert summary == {
        "total": 6,
        "enabled": 2,
        "disabled": 4,
        "licence_problems": 1,
        "disabled_by_licence": 1,
        "disabled_by_user": 1,
        "disabled_by_exception": 1,
        "disabled_by_crash_loop": 1,
        "disabled_by_other": 0,
    }
    assert ms.licence_problems(rows) == [
        {"uniqid": "ModuleUsersUI", "name": "Users and access rights", "disable_reason_text": "License expired (2011)"}
    ]


def test_required_problems():
    rows = ms.rows_from_sql(SQL_ROWS)
    problems = ms.required_problems(
        rows, ["ModuleUsersUI", "moduletemplate", "ModuleBackup", "ModuleMissing", "ModuleTelegramProvider"]
    )
    assert [(p["uniqid"], p["problem"]) for p in problems] == [
        ("ModuleUsersUI", "licence"),
        ("ModuleBackup", "disabled"),
        ("ModuleMissing", "not_installed"),
    ]
    assert "License expired (2011)" in problems[0]["message"]
    assert "reason: user" in problems[1]["message"]
    assert ms.required_problems(rows, None) == []


def test_failures_follow_fail_on():
    rows = ms.rows_from_sql(SQL_ROWS)
    required = ms.required_problems(rows, ["ModuleMissing"])
    market_down = {"status": "unreachable", "message": "Could not resolve host"}

    assert ms.failures(rows, required, market_down, []) == []
    assert ms.failures(rows, [], None, ["required"]) == []

    reasons = ms.failures(rows, required, market_down, ms.FAIL_ON_CHOICES)
    assert len(reasons) == 5
    joined = " | ".join(reasons)
    for text in ("ModuleUsersUI", "ModuleAmoCrm", "ModuleAutoDialer", "ModuleMissing", "unreachable"):
        assert text in joined
    # The user-disabled module and the enabled one with a stale reason are never failures.
    assert "ModuleBackup" not in joined and "ModuleTelegramProvider" not in joined

    assert ms.failures(rows, [], {"status": "ok", "message": ""}, ["marketplace"]) == []
    assert ms.failures(rows, [], {"status": "skipped", "message": ""}, ["marketplace"]) == []


# ---------------------------------------------------------------------------------------------
# marketplace answer, module info, remediation candidates


def test_marketplace_ok():
    status = ms.marketplace_status_from_answer(True, {"modules": [{"uniqid": "A"}, {"uniqid": "B"}]}, [])
    assert status["status"] == "ok" and status["modules_available"] == 2


@pytest.mark.parametrize(
    "messages,status",
    [
        (["Could not resolve host: releases.mikopbx.com"], "unreachable"),
        ({"error": ["Connection timed out after 15001 milliseconds"]}, "unreachable"),
        (["Failed to connect to releases.mikopbx.com port 443: No route to host"], "unreachable"),
        ({"error": ["Server answered: 500 Internal Server Error"]}, "upstream_error"),
        (["Wrong answer from the repository"], "upstream_error"),
        ([], "upstream_error"),
        ("plain string failure", "upstream_error"),
    ],
)
def test_marketplace_failures(messages, status):
    answer = ms.marketplace_status_from_answer(False, [], messages)
    assert answer["status"] == status
    assert answer["message"]


def test_marketplace_success_without_a_list_is_an_upstream_error():
    assert ms.marketplace_status_from_answer(True, {"error": "x"}, [])["status"] == "upstream_error"
    assert ms.marketplace_status_from_answer(True, [], [])["status"] == "upstream_error"


def test_message_texts_flattens_every_shape():
    assert ms.message_texts({"error": ["a"], "license": ["b"], "info": "c"}) == ["a", "b", "c"]
    assert ms.message_texts(["a", ["b"]]) == ["a", "b"]
    assert ms.message_texts("  ") == []
    assert ms.message_texts(None) == []


def test_licence_ids():
    assert ms.licence_ids({"lic_feature_id": "41", "lic_product_id": 12}) == (41, 12)
    assert ms.licence_ids({"lic_feature_id": "0", "lic_product_id": ""}) == (None, None)
    assert ms.licence_ids([]) == (None, None)


def test_remediation_candidates_are_only_licence_disabled_modules():
    rows = ms.rows_from_sql(SQL_ROWS)
    assert [m["uniqid"] for m in ms.remediation_candidates(rows)] == ["ModuleUsersUI"]


def test_page_with_toggle_first_and_a_module_name_element():
    page = """<table id="installed-modules-table"><tbody>
    <tr class="module-row" data-id="ModuleUsersUI" data-version="1.3.2">
      <td class="collapsing"><div class="ui toggle checkbox"><input type="checkbox" name="ModuleUsersUI"/>
        <label></label></div></td>
      <td><span data-html="Licence &quot;expired&quot; (2011)"><i class="icons"><i class="big red dont icon"></i>
        <i class="key icon"></i></i></span><span class="module-name">Users <b>and</b> rights</span><br>
        <span class="features">Web interface users</span></td>
      <td>MIKO</td><td class="version">1.3.2</td>
    </tr>
    <tr class="module-row" data-id="ModuleBackup" data-version="1.6.1">
      <td><input type="checkbox" checked="checked" name="ModuleBackup"/></td>
      <td><span class="module-name">BreadcrumbModuleBackup</span><br><span class="features">Backups</span></td>
    </tr></tbody></table>"""
    rows = by_id(ms.rows_from_admin_page(page))
    assert rows["ModuleUsersUI"]["name"] == "Users and rights"
    assert rows["ModuleUsersUI"]["licence_problem"] is True
    assert rows["ModuleUsersUI"]["disable_reason_text"] == 'Licence "expired" (2011)'
    # An untranslated name key falls back to the id.
    assert rows["ModuleBackup"]["name"] == "ModuleBackup"
    assert rows["ModuleBackup"]["enabled"] is True
