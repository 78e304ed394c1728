"""Fidelity of the emulated legacy generation (MikoPBX 2024.1.x) against the reference.

Each test names the reference section (``docs/mikopbx-api.md``) it checks.
Legacy authentication is the admin-cabinet PHP session; every login POST counts against the
10-per-5-minutes limit (§3.2), so tests that log in explicitly use a PBX of their own.
"""

from __future__ import annotations

import json
import re

from fidelity_helpers import (
    FEATURE_IDS_EMPTY,
    LEGACY_404,
    NOT_AUTHENTICATED,
    NOT_AUTHORIZED_XHR,
    body,
    describe,
    expect,
    fleet_fixture,
    messages_of,
    module_row,
    random_key,
    trial_fields,
)

fleet = fleet_fixture(count=36, generation="legacy", time_scale=0.1, rate_limit=False)

API = "/pbxcore/api"


def shared(fleet):
    return fleet.pbx(fleet.names("legacy")[0])


def take(fleet):
    used = getattr(fleet, "_used", set())
    fleet._used = used
    used.add(fleet.names("legacy")[0])
    for n in fleet.names("legacy"):
        if n not in used:
            used.add(n)
            return fleet.pbx(n)
    raise AssertionError("legacy fleet too small for this module")


# ------------------------------------------------------------------------------------------ §1


def test_generation_detection_v3_ping_is_404(fleet):
    """§1 generation detection: on 2024 GET /pbxcore/api/v3/system:ping -> 404 (no such route)."""
    pbx = shared(fleet)
    resp = pbx.anon().get(pbx.url + API + "/v3/system:ping", timeout=30)
    expect(resp, 404, "§1")


def test_nginx_pong_without_auth(fleet):
    """§1/§8.1: GET /pbxcore/api/system/ping -> static PONG without authentication (both generations)."""
    pbx = shared(fleet)
    resp = pbx.anon().get(pbx.url + API + "/system/ping", timeout=30)
    assert resp.status_code == 200 and resp.text.strip() == "PONG", describe(resp)


# ------------------------------------------------------------------------------------------ §3.2 auth


def test_unauthenticated_401_errors_shape(fleet):
    """§3.2: without a session -> 401 {"jsonapi":{"version":"1.0"},"errors":["The user isn't authenticated."],
    "meta":…} (not PBXApiResult-shaped)."""
    pbx = take(fleet)  # keeps anonymous calls off the shared PBX (fail2ban counts them, §3.2)
    resp = pbx.anon().get(pbx.url + API + "/license/getLicenseInfo", timeout=30)
    data = expect(resp, 401, "§3.2")
    assert data["jsonapi"] == {"version": "1.0"}, describe(resp)
    assert data["errors"] == [NOT_AUTHENTICATED], describe(resp)
    assert "result" not in data and set(data["meta"]) >= {"timestamp", "hash"}, describe(resp)


def test_bearer_tokens_are_not_accepted(fleet):
    """§3.2 / §12: no Bearer tokens, API keys or JWT in 2024 -> a Bearer header does not authenticate (401); the
    v3 auth and api-keys routes do not exist (404)."""
    pbx = take(fleet)  # keeps anonymous calls off the shared PBX (fail2ban counts them, §3.2)
    resp = pbx.bearer("a" * 64).get(pbx.url + API + "/license/getLicenseInfo", timeout=30)
    expect(resp, 401, "§3.2")
    resp = pbx.anon().post(
        pbx.url + API + "/v3/auth:login", json={"login": pbx.username, "password": pbx.password}, timeout=30
    )
    expect(resp, 404, "§1/§3.2 no v3 login on 2024")


def test_session_login_success_shape(fleet):
    """§3.2 / §11.4: POST /admin-cabinet/session/start (form, XHR) -> 200 {"success":true,"reload":
    "/admin-cabinet/extensions/index","message":[]} and a PHPSESSID cookie that authorises /pbxcore/api/*."""
    pbx = take(fleet)
    s = pbx.anon()
    resp = pbx.legacy_login(s)
    data = expect(resp, 200, "§11.4")
    assert data == {"success": True, "reload": "/admin-cabinet/extensions/index", "message": []}, describe(resp)
    assert s.cookies.get("PHPSESSID"), f"no PHPSESSID cookie: {resp.headers.get('Set-Cookie')!r}"
    api = s.get(pbx.url + API + "/license/ping", timeout=30)
    expect(api, 200, "§3.2 session authorises the REST API")


def test_session_login_failure_shape(fleet):
    """§3.2: wrong password -> HTTP 200 {"success":false,"reload":false,"message":{"error":[…]}}; no session."""
    pbx = take(fleet)
    s = pbx.anon()
    resp = pbx.legacy_login(s, password="wrong-password")
    data = expect(resp, 200, "§3.2 failure is still HTTP 200")
    assert data["success"] is False and data["reload"] is False, describe(resp)
    assert isinstance(data["message"]["error"], list) and data["message"]["error"], describe(resp)
    expect(s.get(pbx.url + API + "/license/ping", timeout=30), 401, "§3.2 no session after a failed login")


def test_login_attempt_limit_counts_successes(fleet):
    """§3.2 brute-force: 10 attempts per IP per 5-min window, every POST counts (success included); the 11th is
    refused even with the right password; a new window admits again."""
    pbx = take(fleet)
    expect(pbx.legacy_login(), 200, "§3.2")
    for i in range(9):
        data = expect(pbx.legacy_login(password=f"wrong-{i}"), 200, "§3.2")
        assert data["success"] is False, data
    s = pbx.anon()
    resp = pbx.legacy_login(s)
    data = body(resp)
    assert isinstance(data, dict) and data.get("success") is False, (
        f"11th login POST in the window must be refused (§3.2): {describe(resp)}"
    )
    assert messages_of({"messages": data.get("message")}, "error"), describe(resp)
    expect(s.get(pbx.url + API + "/license/ping", timeout=30), 401, "§3.2 refused login gives no session")
    fleet.control.advance(301)
    data = expect(pbx.legacy_login(), 200, "§3.2 new window")
    assert data["success"] is True, data


def test_logout_ends_session(fleet):
    """§3.2: GET /admin-cabinet/session/end ends the session; the cookie no longer authorises the API."""
    pbx = take(fleet)
    s = pbx.legacy_session()
    expect(s.get(pbx.url + API + "/license/ping", timeout=30), 200, "§3.2")
    s.get(pbx.url + "/admin-cabinet/session/end", timeout=30, allow_redirects=False)
    expect(s.get(pbx.url + API + "/license/ping", timeout=30), 401, "§3.2 after logout")


def test_admin_ajax_without_session_403_plain(fleet):
    """§3.2: an admin-cabinet AJAX request without a session -> 403 plain text "This user is not authorized"."""
    pbx = shared(fleet)
    resp = pbx.anon().get(
        pbx.url + "/admin-cabinet/pbx-extension-modules/index",
        headers={"X-Requested-With": "XMLHttpRequest"},
        timeout=30,
        allow_redirects=False,
    )
    assert resp.status_code == 403 and resp.text.strip() == NOT_AUTHORIZED_XHR, describe(resp)


# ------------------------------------------------------------------------------------------ §4 envelope


def test_envelope_jsonapi_wrapping(fleet):
    """§4: legacy envelope = {"jsonapi":{"version":"1.0"}, PBXApiResult…, "meta":{timestamp, hash}}; no httpCode."""
    pbx = shared(fleet)
    resp = pbx.get(API + "/license/ping")
    data = expect(resp, 200, "§4")
    assert data["jsonapi"] == {"version": "1.0"}, describe(resp)
    for f in ("result", "data", "messages", "function", "processor", "pid", "meta"):
        assert f in data, f"{f} missing: {describe(resp)}"
    assert "httpCode" not in data and data["result"] is True and data["function"] == "ping", describe(resp)
    assert resp.headers.get("Access-Control-Allow-Origin") == "*", dict(resp.headers)
    assert re.fullmatch(r"[0-9a-f]{40}", data["meta"]["hash"]), f"meta.hash is a sha1 (§4): {data['meta']}"


def test_result_false_is_http_200(fleet):
    """§4 / §12: a processor failure is HTTP 200 on legacy -- getLicenseInfo without a key: result false,
    messages.error [lic_WrongLicenseKeyOrEmpty]."""
    pbx = take(fleet)
    resp = pbx.lic_info()
    data = expect(resp, 200, "§5.1 legacy getLicenseInfo empty key")
    assert data["result"] is False and len(messages_of(data, "error")) == 1, describe(resp)


def test_unknown_route_404_errors(fleet):
    """§4: no route -> 404 {"jsonapi":…, "errors":["404 (Not Found)"]}."""
    pbx = shared(fleet)
    resp = pbx.get(API + "/licence/ping")
    data = expect(resp, 404, "§4")
    assert data["errors"] == [LEGACY_404] and data["jsonapi"] == {"version": "1.0"}, describe(resp)


def test_unknown_processor_action_200_result_false(fleet):
    """§4 / §8.1: the sysinfo GET controller forwards any action; an unknown one is HTTP 200, result false."""
    pbx = shared(fleet)
    resp = pbx.get(API + "/sysinfo/getNothingAtAll")
    data = expect(resp, 200, "§4 unknown action")
    assert data["result"] is False and messages_of(data, "error"), describe(resp)


# ------------------------------------------------------------------------------------------ §5 licence


def test_apply_key_form_encoded(fleet):
    """§11.4: processUserRequest with a form body licKey -> 200 {jsonapi, result true, data.PBXLicense,
    messages.info list}."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    resp = pbx.lic_request({"licKey": key})
    data = expect(resp, 200, "§11.4", {"licKey": key})
    assert data["result"] is True and data["data"] == {"PBXLicense": key}, describe(resp)
    assert isinstance(data["messages"]["info"], list) and data["messages"]["info"], describe(resp)
    assert fleet.control.license_key(pbx.name) == key


def test_json_body_is_ignored(fleet):
    """§5.1: legacy POST bodies are read with getPost() -- a JSON body is ignored, so a JSON licKey is not
    applied (HTTP 200, stored key unchanged)."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§11.4")
    other = fleet.control.create_company()
    resp = pbx.post(pbx.lic_path("processUserRequest"), json={"licKey": other})
    data = expect(resp, 200, "§5.1 (HTTP always 200)", {"json": {"licKey": other}})
    assert data["result"] is False, f"a JSON body must not be read on legacy (§5.1): {describe(resp)}"
    assert fleet.control.license_key(pbx.name) == key


def test_same_key_result_false_empty_messages(fleet):
    """§5.2 legacy / §11.4: the stored key again (no coupon) -> 200, result false, data [], messages [] --
    not idempotent-friendly."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§11.4")
    resp = pbx.lic_request({"licKey": key})
    data = expect(resp, 200, "§11.4 same key")
    assert data["result"] is False and data["data"] == [] and data["messages"] == [], describe(resp)
    assert fleet.control.license_key(pbx.name) == key


def test_unknown_key_result_false_license_message(fleet):
    """§5.2 legacy: an unknown well-formed key -> HTTP 200, result false, messages.license (2026 text); nothing
    stored."""
    pbx = take(fleet)
    sent = {"licKey": random_key()}
    resp = pbx.lic_request(sent)
    data = expect(resp, 200, "§5.2 legacy (always 200)", sent)
    assert data["result"] is False and messages_of(data, "license"), describe(resp)
    assert "httpCode" not in data, describe(resp)
    assert fleet.control.license_key(pbx.name) == ""


def test_malformed_key_becomes_trial(fleet):
    """§5.2: a malformed licKey is not rejected; the request becomes a trial registration whose success carries
    messages.info as a string (both generations)."""
    pbx = take(fleet)
    sent = {"licKey": "MIKO-AAAAA-BBBBB-CCCCC-DDDD", **trial_fields()}
    resp = pbx.lic_request(sent)
    data = expect(resp, 200, "§5.2", sent)
    assert data["result"] is True and isinstance(data["messages"]["info"], str), describe(resp)
    assert re.fullmatch(r"MIKO-[A-Z0-9]{5}(-[A-Z0-9]{5}){3}", data["data"]["PBXLicense"]), describe(resp)
    assert fleet.control.license_key(pbx.name) == data["data"]["PBXLicense"]


def test_feature_status_present(fleet):
    """§5.2 getMikoPBXFeatureStatus (legacy only): with a bound key -> result true; without a key -> result false
    with messages.license (lic_WrongLicenseKeyOrEmpty)."""
    pbx = take(fleet)
    resp = pbx.get(pbx.lic_path("getMikoPBXFeatureStatus"))
    data = expect(resp, 200, "§5.2 no key")
    assert data["result"] is False and messages_of(data, "license"), describe(resp)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§11.4")
    resp = pbx.get(pbx.lic_path("getMikoPBXFeatureStatus"))
    data = expect(resp, 200, "§5.2 with a key")
    assert data["result"] is True, describe(resp)


def test_reset_key(fleet):
    """§5.2 resetKey (GET): result true, data []; PBXLicense emptied."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§11.4")
    resp = pbx.lic_reset()
    data = expect(resp, 200, "§5.2")
    assert data["result"] is True and data["data"] == [], describe(resp)
    assert fleet.control.license_key(pbx.name) == ""


def test_ping_and_metrics(fleet):
    """§5.1: license/ping and license/sendPBXMetrics -> result true, data []."""
    pbx = shared(fleet)
    for action in ("ping", "sendPBXMetrics"):
        data = expect(pbx.get(pbx.lic_path(action)), 200, f"§5.1 {action}")
        assert data["result"] is True and data["data"] == [], data


def test_capture_feature_empty_ids_plain_list(fleet):
    """§5.2: captureFeatureForProductId with empty ids -> HTTP 200, result false, the text as a plain list."""
    pbx = shared(fleet)
    resp = pbx.post(pbx.lic_path("captureFeatureForProductId"), data={})
    data = expect(resp, 200, "§5.2")
    assert data["result"] is False and data["messages"] == [FEATURE_IDS_EMPTY], describe(resp)


def test_license_info_string_cache_and_failure_empty_messages(fleet):
    """§5.2 legacy getLicenseInfo: licenseInfo is a JSON string; answers are cached 120 s; a server error string
    gives result false with *empty* messages (HTTP 200)."""
    pbx = take(fleet)
    key = fleet.control.create_company(companyname="Legacy Co")
    expect(pbx.lic_request({"licKey": key}), 200, "§11.4")
    resp = pbx.lic_info()
    data = expect(resp, 200, "§5.2")
    assert isinstance(data["data"]["licenseInfo"], str), describe(resp)
    info = json.loads(data["data"]["licenseInfo"])
    assert info["@attributes"]["key"] == key and info["@attributes"]["companyname"] == "Legacy Co", info
    fleet.control.free_seat(key, fleet.control.machine_id(pbx.name))
    data = expect(pbx.lic_info(), 200, "§5.2 cached")
    assert data["result"] is True, data
    fleet.control.advance(125)
    resp = pbx.lic_info()
    data = expect(resp, 200, "§5.2 legacy failure")
    assert data["result"] is False and data["messages"] == [], describe(resp)


# ------------------------------------------------------------------------------------------ §6 settings


def test_admin_page_globals(fleet):
    """§6: logged in, any admin page carries var globalPBXLicense = '…' and var globalPBXVersion = '…'."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§11.4")
    resp = pbx.get("/admin-cabinet/pbx-extension-modules/index")
    assert resp.status_code == 200, describe(resp)
    lic = re.search(r"globalPBXLicense\s*=\s*'([^']*)'", resp.text)
    ver = re.search(r"globalPBXVersion\s*=\s*'([^']*)'", resp.text)
    assert lic and lic.group(1) == key, resp.text[:1500]
    version = fleet.control.state(pbx.name)["settings"]["PBXVersion"]
    assert ver and ver.group(1) == version and version.startswith("2024.1"), (ver and ver.group(1), version)


# ------------------------------------------------------------------------------------------ §7 modules


def test_enable_module_keeps_stale_reason(fleet):
    """§7.1 / §7.3: modules/core/enableModule sets disabled='0' and leaves the old disableReason/Text."""
    pbx = take(fleet)
    fleet.control.set_modules(
        pbx.name, [module_row("ModuleTemplate", disabled=True, reason="DisabledByUser", text="switched off")]
    )
    resp = pbx.module_enable("ModuleTemplate")
    data = expect(resp, 200, "§7.3")
    assert data["result"] is True, describe(resp)
    row = fleet.control.modules(pbx.name)["ModuleTemplate"]
    assert str(row["disabled"]) == "0" and row["disableReason"] == "DisabledByUser", row


def test_disable_module_stores_reason(fleet):
    """§7.1 / §7.3: disableModule with reason=DisabledByUser (the 2024 UI's value) stores it."""
    pbx = take(fleet)
    fleet.control.set_modules(pbx.name, [module_row("ModuleTemplate")])
    data = expect(pbx.module_disable("ModuleTemplate", "DisabledByUser"), 200, "§7.3")
    assert data["result"] is True, data
    row = fleet.control.modules(pbx.name)["ModuleTemplate"]
    assert str(row["disabled"]) == "1" and row["disableReason"] == "DisabledByUser", row


def test_enable_licensed_module_without_licence(fleet):
    """§7.4: enabling a module whose feature the licence lacks -> HTTP 200 (legacy), result false,
    messages.license; row disabled with DisabledByLicense and a reason text."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§11.4")
    fleet.control.set_modules(
        pbx.name, [module_row("ModuleAutoDialer", disabled=True, reason="DisabledByUser", feature=203, product=103)]
    )
    resp = pbx.module_enable("ModuleAutoDialer")
    data = expect(resp, 200, "§7.4 legacy (HTTP 200)")
    assert data["result"] is False and messages_of(data, "license"), describe(resp)
    row = fleet.control.modules(pbx.name)["ModuleAutoDialer"]
    assert str(row["disabled"]) == "1" and row["disableReason"] == "DisabledByLicense" and row["disableReasonText"]


def test_admin_modules_page_markers(fleet):
    """§7.4 admin page markers (session): module-row rows with data-id/data-version, checked when enabled, the
    key icon + reason text for licence-disabled, a bug icon for DisabledByException."""
    pbx = take(fleet)
    fleet.control.set_modules(
        pbx.name,
        [
            module_row("ModuleTemplate", version="1.0.0"),
            module_row(
                "ModuleUsersUI",
                disabled=True,
                reason="DisabledByLicense",
                text="2011: expired",
                feature=201,
                product=101,
                version="1.3.2",
            ),
            module_row(
                "ModuleBackup", disabled=True, reason="DisabledByException", text="Fatal error", version="1.6.1"
            ),
        ],
    )
    resp = pbx.get("/admin-cabinet/pbx-extension-modules/index")
    assert resp.status_code == 200, describe(resp)
    html = resp.text
    rows = dict(re.findall(r'<tr[^>]*class="module-row"[^>]*data-id="(\w+)"[^>]*>(.*?)</tr>', html, re.DOTALL))
    assert set(rows) == {"ModuleTemplate", "ModuleUsersUI", "ModuleBackup"}, html[:2000]
    assert re.search(r'data-id="ModuleBackup"[^>]*data-version="1\.6\.1"', html), html[:2000]
    assert 'checked="checked"' in rows["ModuleTemplate"], rows["ModuleTemplate"]
    assert all('checked="checked"' not in rows[u] for u in ("ModuleUsersUI", "ModuleBackup")), rows
    assert "key icon" in rows["ModuleUsersUI"] and "2011: expired" in rows["ModuleUsersUI"], rows["ModuleUsersUI"]
    assert "bug" in rows["ModuleBackup"] and "key icon" not in rows["ModuleBackup"], rows["ModuleBackup"]


def test_no_sql_or_bash_endpoint(fleet):
    """§6 / §12: 2024 has no raw SQL / bash endpoint (v3 only) -> 404."""
    pbx = shared(fleet)
    resp = pbx.post(API + "/v3/system:executeSqlRequest", json={"query": "SELECT 1"})
    expect(resp, 404, "§12")


# ------------------------------------------------------------------------------------------ §8 system info


def test_sysinfo_get_info(fleet):
    """§8.1 legacy: sysinfo/getInfo -> data.filename and data.content; content starts with the PBXVersion
    section holding the 2024.1 version."""
    pbx = shared(fleet)
    resp = pbx.get(API + "/sysinfo/getInfo")
    data = expect(resp, 200, "§8.1")
    d = data["data"]
    assert "filename" in d and isinstance(d["content"], str), describe(resp)
    version = fleet.control.state(pbx.name)["settings"]["PBXVersion"]
    lines = [ln.strip() for ln in d["content"].splitlines() if ln.strip()]
    idx = next(i for i, ln in enumerate(lines) if "PBXVersion" in ln)
    assert version in lines[idx + 1] and version.startswith("2024.1"), lines[:6]


# ------------------------------------------------------------------------------------------ more §3.2 / §4 / §9


def test_session_lifetime_3600s(fleet):
    """§3.2: session data lives 3600 s -- after that the cookie no longer authorises the API."""
    pbx = take(fleet)
    s = pbx.legacy_session()
    expect(s.get(pbx.url + API + "/license/ping", timeout=30), 200, "§3.2")
    fleet.control.advance(3601)
    expect(s.get(pbx.url + API + "/license/ping", timeout=30), 401, "§3.2 session expired")


def test_no_nginx_rate_limit_on_legacy(fleet):
    """§9 / §12: 2024 has no HTTP rate limiting besides fail2ban -- 250 quick authenticated calls all succeed."""
    pbx = take(fleet)
    s = pbx.legacy_session()
    codes = {s.get(pbx.url + API + "/license/sendPBXMetrics", timeout=30).status_code for _n in range(250)}
    assert codes == {200}, codes


def test_async_channel_header_legacy(fleet):
    """§4: on 2024 the X-Async-Response-Channel-Id header makes the worker answer at once: result true with an
    "async job … started" message in messages.info (a PBXApiResult, unlike v3)."""
    pbx = take(fleet)
    fleet.control.set_modules(pbx.name, [module_row("ModuleTemplate", disabled=True, reason="DisabledByUser")])
    resp = pbx.post(
        API + "/modules/core/enableModule",
        data={"uniqid": "ModuleTemplate"},
        headers={"X-Async-Response-Channel-Id": "fidelity-channel"},
    )
    data = expect(resp, 200, "§4 async header (legacy)")
    assert data["result"] is True and messages_of(data, "info"), describe(resp)
    assert "async" in " ".join(messages_of(data, "info")).lower(), describe(resp)


def test_etag_header(fleet):
    """§4: legacy responses carry the E-Tag header."""
    pbx = shared(fleet)
    resp = pbx.get(API + "/license/ping")
    assert resp.status_code == 200 and resp.headers.get("E-Tag"), dict(resp.headers)


def test_available_modules_legacy(fleet):
    """§7.3: GET modules/core/getAvailableModules -> marketplace list in data.modules (HTTP 200)."""
    pbx = shared(fleet)
    resp = pbx.get(API + "/modules/core/getAvailableModules")
    data = expect(resp, 200, "§7.3")
    assert data["result"] is True and isinstance(data["data"]["modules"], list) and data["data"]["modules"], describe(
        resp
    )
    resp = pbx.post(API + "/modules/core/getModuleInfo", data={"uniqid": data["data"]["modules"][0]["uniqid"]})
    info = expect(resp, 200, "§7.3 getModuleInfo")
    assert info["result"] is True and "releases" in info["data"], describe(resp)


def _banned(pbx, s):
    """True when the PBX no longer answers this client normally: a firewall drop (timeout / refused) or the
    nginx 403 'Access denied' of a blacklisted IP."""
    import requests

    try:
        resp = s.get(pbx.url + API + "/license/ping", timeout=3)
    except (requests.ConnectionError, requests.Timeout):
        return True
    return resp.status_code == 403


def test_fail2ban_bans_after_unauthenticated_rest_calls(fleet):
    """§3.2 fail2ban trap: on 2024 every unauthenticated REST call is logged as a wrong password and counted by
    the mikopbx-www jail (5 failures / 1800 s -> 86400 s ban): after 5 such calls even a valid session is
    refused at the network level."""
    pbx = take(fleet)
    s = pbx.legacy_session()
    expect(s.get(pbx.url + API + "/license/ping", timeout=30), 200, "§3.2")
    anon = pbx.anon()
    for _n in range(4):
        expect(anon.get(pbx.url + API + "/license/ping", timeout=30), 401, "§3.2")
    assert not _banned(pbx, s), "banned after only 4 unauthenticated calls (threshold 5)"
    try:
        resp = anon.get(pbx.url + API + "/license/ping", timeout=3)
        assert resp.status_code in (401, 403), describe(resp)
    except Exception:  # noqa: BLE001 - the 5th call itself may already be dropped
        pass
    assert _banned(pbx, s), "5 unauthenticated REST calls in 1800 s must get the client banned (§3.2 fail2ban)"
    fleet.control.advance(3600)
    assert _banned(pbx, pbx.anon()), "the 2024 ban lasts 86400 s (§3.2)"
    fleet.control.advance(86400 - 3600 + 60)
    fresh = pbx.legacy_session()
    expect(fresh.get(pbx.url + API + "/license/ping", timeout=30), 200, "§3.2 ban over after 86400 s")


def test_sysinfo_hypervisor_and_dmi(fleet):
    """§8.1 legacy: sysinfo/getHypervisorInfo -> data {Hypervisor}; sysinfo/getDMIInfo -> data {DMI} (the GET
    controller forwards any action name)."""
    pbx = shared(fleet)
    for action, key in (("getHypervisorInfo", "Hypervisor"), ("getDMIInfo", "DMI")):
        resp = pbx.get(API + f"/sysinfo/{action}")
        data = expect(resp, 200, f"§8.1 {action}")
        assert data["result"] is True and key in data["data"], describe(resp)


def test_multipart_body_is_read(fleet):
    """§5.1: legacy reads POST bodies with getPost() -- form-urlencoded or multipart both work."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    resp = pbx.post(pbx.lic_path("processUserRequest"), files={"licKey": (None, key)})
    data = expect(resp, 200, "§5.1 multipart", {"licKey": key})
    assert data["result"] is True and data["data"] == {"PBXLicense": key}, describe(resp)


def test_feature_status_success_cached_a_day(fleet):
    """§5.2 getMikoPBXFeatureStatus: the outcome is cached 86400 s on success (120 s on failure) -- a seat freed
    in the cabinet still reads as OK an hour later, and only after a day as a failure."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§11.4")
    data = expect(pbx.get(pbx.lic_path("getMikoPBXFeatureStatus")), 200, "§5.2")
    assert data["result"] is True, data
    fleet.control.free_seat(key, fleet.control.machine_id(pbx.name))
    fleet.control.advance(3600)
    data = expect(pbx.get(pbx.lic_path("getMikoPBXFeatureStatus")), 200, "§5.2 success cached 86400 s")
    assert data["result"] is True, data
    fleet.control.advance(86400)
    data = expect(pbx.get(pbx.lic_path("getMikoPBXFeatureStatus")), 200, "§5.2 after the day-long cache")
    assert data["result"] is False and messages_of(data, "license"), data


def test_remember_me_sets_random_token_cookie(fleet):
    """§3.2: login with rememberMeCheckBox=on adds a random_token cookie valid 30 days besides PHPSESSID."""
    pbx = take(fleet)
    s = pbx.anon()
    resp = s.post(
        pbx.url + "/admin-cabinet/session/start",
        data={"login": pbx.username, "password": pbx.password, "rememberMeCheckBox": "on"},
        headers={"X-Requested-With": "XMLHttpRequest"},
        timeout=30,
    )
    data = expect(resp, 200, "§3.2")
    assert data["success"] is True, describe(resp)
    assert s.cookies.get("PHPSESSID") and s.cookies.get("random_token"), resp.headers.get("Set-Cookie")
    expiry = next(c.expires for c in s.cookies if c.name == "random_token")
    assert expiry, "random_token must be a persistent (30-day) cookie (§3.2)"


def test_localhost_needs_no_session(fleet):
    """§3.2: requests from 127.0.0.1 are accepted without a session (the emulator marks a local request with
    X-Emulator-Localhost: 1, since all its listeners are on loopback)."""
    pbx = shared(fleet)
    resp = pbx.anon().get(pbx.url + API + "/license/ping", headers={"X-Emulator-Localhost": "1"}, timeout=30)
    data = expect(resp, 200, "§3.2 localhost")
    assert data["result"] is True, describe(resp)


def test_session_does_not_cross_pbxs(fleet):
    """§3.2: a PHPSESSID belongs to the PBX that issued it; another PBX answers 401."""
    a, b = fleet.pbx(fleet.names("legacy")[0]), take(fleet)
    cookie = a.session().cookies.get("PHPSESSID")
    foreign = b.anon()
    foreign.headers["Cookie"] = f"PHPSESSID={cookie}"
    expect(foreign.get(b.url + API + "/license/ping", timeout=30), 401, "§3.2 foreign session")


def test_no_secret_in_logs(fleet):
    """design §2: neither the request log nor the emulator log holds the password, the session id or a licence
    key."""
    pbx = take(fleet)
    s = pbx.legacy_session()
    key = fleet.control.create_company()
    expect(s.post(pbx.url + API + "/license/processUserRequest", data={"licKey": key}, timeout=30), 200, "§11.4")
    secrets = {"password": pbx.password, "session": s.cookies.get("PHPSESSID"), "licence": key}
    log = json.dumps(fleet.control.requests_log(pbx.name))
    assert not [n for n, v in secrets.items() if v and v in log], "secret in the request log"
    text = open(fleet.fleet.log_path, encoding="utf-8", errors="replace").read()
    assert not [n for n, v in secrets.items() if v and v in text], f"secret in {fleet.fleet.log_path}"
