"""The envelope parser against every answer shape of the reference (§4, §11)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.mikopbx.marketplace.plugins.module_utils.envelope import (
    MESSAGE_KINDS,
    normalize_messages,
    parse_response,
)


def parse(status, body):
    return parse_response(status, json.dumps(body) if not isinstance(body, (str, bytes)) else body)


def test_v3_success_with_empty_messages_list():
    body = {
        "result": True,
        "data": {"licenseInfo": "{}"},
        "messages": [],
        "function": "getLicenseInfo",
        "processor": "X::main",
        "pid": 1,
        "meta": {"timestamp": "", "hash": ""},
    }
    result = parse(200, body)
    assert result.ok is True
    assert result.data == {"licenseInfo": "{}"}
    assert result.function == "getLicenseInfo"
    assert result.messages == {"error": [], "info": [], "warning": [], "license": []}


def test_messages_always_have_every_kind():
    result = parse(200, {"result": True, "data": [], "messages": {"info": ["done"]}})
    assert set(result.messages) == set(MESSAGE_KINDS)
    assert result.messages["info"] == ["done"]


def test_trial_success_info_is_a_string():
    body = {
        "result": True,
        "data": {"PBXLicense": "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"},
        "messages": {"info": "Registration successful"},
        "function": "processUserRequest",
    }
    result = parse(200, body)
    assert result.ok
    assert result.messages["info"] == ["Registration successful"]


def test_v3_getlicenseinfo_failure_messages_plain_list_go_to_error():
    body = {"result": False, "data": [], "messages": ["2008: feature capture failed"], "function": "getLicenseInfo"}
    result = parse(422, body)
    assert not result.ok
    assert result.messages["error"] == ["2008: feature capture failed"]
    assert result.licence_code == 2008


def test_messages_as_plain_string():
    result = parse(422, {"result": False, "data": [], "messages": "Wrong module info"})
    assert result.messages["error"] == ["Wrong module info"]


def test_v3_404_uses_success_instead_of_result():
    body = {
        "success": False,
        "messages": {"error": ["Endpoint not found: /pbxcore/api/v3/licence:ping"]},
        "data": None,
        "meta": {},
    }
    result = parse(404, body)
    assert result.ok is False
    assert result.status == 404
    assert "Endpoint not found" in result.error_text()


def test_legacy_jsonapi_wrapper_success():
    body = {
        "jsonapi": {"version": "1.0"},
        "result": True,
        "data": {"PBXLicense": "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"},
        "messages": {"info": ["ok"]},
        "function": "processUserRequest",
        "meta": {},
    }
    result = parse(200, body)
    assert result.ok and result.data["PBXLicense"].startswith("MIKO-")


def test_legacy_errors_body_is_a_failure_even_without_result():
    body = {"jsonapi": {"version": "1.0"}, "errors": ["The user isn't authenticated."], "meta": {}}
    result = parse(401, body)
    assert not result.ok
    assert result.messages["error"] == ["The user isn't authenticated."]


def test_legacy_result_false_at_http_200_is_not_ok():
    result = parse(200, {"jsonapi": {"version": "1.0"}, "result": False, "data": [], "messages": []})
    assert result.ok is False
    assert result.status == 200
    assert result.error_text() == ""


def test_result_true_with_http_400_is_not_ok_but_keeps_messages():
    # v3: key rejected (httpCode 400 kept), coupon then accepted (result true).
    body = {
        "result": True,
        "data": [],
        "httpCode": 400,
        "messages": {"license": ["The license key number is wrong"], "info": ["Coupon activated"]},
    }
    result = parse(400, body)
    assert result.ok is False
    assert result.http_code == 400
    assert result.messages["info"] == ["Coupon activated"]
    assert result.licence_code == 2026


@pytest.mark.parametrize(
    "status, text, expected_ok",
    [(429, "Too many requests", False), (403, "Access denied", False), (200, "PONG", True)],
)
def test_plain_text_answers(status, text, expected_ok):
    result = parse_response(status, text)
    assert result.body_kind == "text"
    assert result.ok is expected_ok
    if expected_ok:
        assert result.data == "PONG"
    else:
        assert result.error_text() == text


def test_html_error_page_is_reduced_to_text():
    result = parse_response(502, "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>")
    assert not result.ok
    assert result.messages["error"] == ["502 Bad Gateway nginx"]


@pytest.mark.parametrize("status, ok", [(200, True), (204, True), (500, False)])
def test_empty_body(status, ok):
    result = parse_response(status, b"")
    assert result.body_kind == "empty"
    assert result.ok is ok


def test_broken_json_is_treated_as_text():
    result = parse_response(500, '{"result": tr')
    assert result.body_kind == "text"
    assert not result.ok


def test_plain_json_list_without_envelope():
    result = parse_response(200, "[1, 2]")
    assert result.ok and result.data == [1, 2]


def test_unknown_message_kinds_are_folded():
    messages = normalize_messages({"error": "x", "debug": ["y"]}, ok=False)
    assert messages["error"] == ["x", "y"]


def test_legacy_login_answer_uses_message_singular():
    body = {"success": False, "reload": False, "message": {"error": ["Wrong login or password, 4 attempts left"]}}
    result = parse(200, body)
    assert not result.ok
    assert "attempts left" in result.error_text()


def test_worker_timeout_body():
    body = {"result": False, "data": [], "messages": {"error": ["Request timeout or worker not responding"]}}
    result = parse(400, body)
    assert not result.ok
    assert result.licence_code is None


@pytest.mark.parametrize(
    "messages, code",
    [
        ({"license": ["Required licence is missing or bound to a different MikoPBX"]}, 2008),
        ({"license": ["The license key number is wrong"]}, 2026),
        ({"license": ["(2051) registered with another e-mail"]}, 2051),
        ({"license": ["Licence server gave no answer, check the Internet settings of the PBX"]}, "no_answer"),
        ({"license": ["Host lookup failed for the licensing server"]}, "dns"),
        ({"error": ["valid until 2026-12-31"]}, None),
    ],
)
def test_licence_code_extraction(messages, code):
    result = parse(400, {"result": False, "data": [], "messages": messages})
    assert result.licence_code == code
