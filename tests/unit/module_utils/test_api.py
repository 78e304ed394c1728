"""MikoPBXClient against a fake network: generation detection, auth, retries, TLS, secrets."""

from __future__ import annotations

import pytest
import requests
from mikopbx_fakes import (
    LEGACY,
    PBX_URL,
    V3,
    Reply,
    legacy_errors,
    legacy_fail,
    legacy_ok,
    license_info_string,
    v3_fail,
    v3_ok,
)

from ansible_collections.mikopbx.marketplace.plugins.module_utils.api import (
    LEGACY_LOGIN_PATH,
    LEGACY_MODULES_PAGE,
    SETTINGS_SQL,
    MikoPBXClient,
)
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError
from ansible_collections.mikopbx.marketplace.plugins.module_utils.licence import (
    apply_key,
    read_license_info,
    register_trial,
    reset_key,
)

KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"
OTHER_KEY = "MIKO-QQQQQ-WWWWW-EEEEE-RRRRR"
API_KEY = "a1" * 32
PASSWORD = "Pa55-w0rd!"
JWT1 = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VySWQiOiJhZG1pbiJ9.c2lnMQ"
JWT2 = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VySWQiOiJhZG1pbiJ9.c2lnMg"
REFRESH = "f" * 64
PHPSESSID = "s3ss10n1d0000000000000000a"

LOGIN = V3 + "auth:login"
REFRESH_PATH = V3 + "auth:refresh"
INFO_V3 = V3 + "license:getLicenseInfo"
INFO_LEGACY = LEGACY + "license/getLicenseInfo"
PUR_V3 = V3 + "license:processUserRequest"
PUR_LEGACY = LEGACY + "license/processUserRequest"
SQL = V3 + "system:executeSqlRequest"


def v3_login_ok(token: str = JWT1) -> Reply:
    return Reply(
        json=v3_ok({"accessToken": token, "tokenType": "Bearer", "expiresIn": 900, "login": "admin"}, "login"),
        cookies={"refreshToken": REFRESH},
    )


def legacy_login_ok() -> Reply:
    return Reply(
        json={"success": True, "reload": "/admin-cabinet/extensions/index", "message": []},
        cookies={"PHPSESSID": PHPSESSID},
    )


def info_ok() -> Reply:
    return Reply(json=v3_ok({"licenseInfo": license_info_string(KEY)}, "getLicenseInfo"))


def client(**kwargs) -> MikoPBXClient:
    kwargs.setdefault("sleep", lambda seconds: None)
    if "api_key" not in kwargs:
        kwargs.setdefault("username", "admin")
        kwargs.setdefault("password", PASSWORD)
    return MikoPBXClient(PBX_URL, **kwargs)


# ------------------------------------------------------------------ generation detection


def test_api_key_implies_v3_without_probe(fake_http):
    fake_http.add("GET", INFO_V3, info_ok())
    c = client(api_key=API_KEY)
    assert c.generation == "v3"
    assert fake_http.requests == []

    info = read_license_info(c)
    assert info["owner"]["companyname"] == "Example LLC"
    assert fake_http.calls() == [("GET", INFO_V3)]
    assert fake_http.requests[0].headers["Authorization"] == "Bearer " + API_KEY
    assert c.request_count == 1


def test_auto_detects_v3_by_login(fake_http):
    fake_http.add("POST", LOGIN, v3_login_ok())
    c = client()
    assert c.generation == "v3"
    login = fake_http.requests[0]
    assert login.json == {"login": "admin", "password": PASSWORD, "rememberMe": False}
    assert "Authorization" not in login.headers


def test_auto_detects_legacy_when_v3_login_is_not_routed(fake_http):
    fake_http.add("POST", LOGIN, Reply(404, json=legacy_errors(["404 (Not Found)"])))
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok())
    fake_http.add(
        "POST", PUR_LEGACY, Reply(json=legacy_ok({"PBXLicense": KEY}, "processUserRequest", {"info": ["Activated"]}))
    )
    c = client()
    assert c.generation == "legacy"
    session_start = fake_http.requests[1]
    assert session_start.form == {"login": ["admin"], "password": [PASSWORD]}
    assert session_start.headers["X-Requested-With"] == "XMLHttpRequest"

    outcome = apply_key(c, " miko-aaaaa-bbbbb-ccccc-ddddd\n")
    assert outcome["stored_key"] == KEY
    sent = fake_http.requests[-1]
    assert sent.path == PUR_LEGACY
    assert sent.form == {"licKey": [KEY]}  # legacy POST bodies are forms
    assert "PHPSESSID=" + PHPSESSID in sent.headers["Cookie"]
    assert PHPSESSID in c.secrets and KEY in c.secrets


def test_explicit_legacy_skips_the_v3_probe(fake_http):
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok())
    fake_http.add("GET", LEGACY + "license/ping", Reply(json=legacy_ok([], "ping")))
    c = client(generation="legacy")
    assert c.generation == "legacy"
    c.call("license.ping")
    assert fake_http.paths() == [LEGACY_LOGIN_PATH, LEGACY + "license/ping"]


def test_explicit_v3_login_404_is_not_found(fake_http):
    fake_http.add("POST", LOGIN, Reply(404, json=legacy_errors(["404 (Not Found)"])))
    c = client(generation="v3")
    with pytest.raises(MikoPBXError) as info:
        c.call("license.ping")
    assert info.value.classification == "not_found"
    assert fake_http.paths() == [LOGIN]


def test_api_key_on_legacy_is_refused_locally(fake_http):
    with pytest.raises(MikoPBXError) as info:
        MikoPBXClient(PBX_URL, api_key=API_KEY, generation="legacy")
    assert info.value.classification == "invalid_input"
    assert fake_http.requests == []


def test_missing_credentials_are_refused_locally(fake_http):
    with pytest.raises(MikoPBXError, match="no credentials"):
        MikoPBXClient(PBX_URL, username="admin")


# ------------------------------------------------------------------ authentication


def test_v3_wrong_password_is_one_failed_login_only(fake_http):
    fake_http.add("POST", LOGIN, Reply(401, json=v3_fail({"error": ["Invalid login or password"]}, "login", 401)))
    c = client()
    with pytest.raises(MikoPBXError) as first:
        c.call("license.getLicenseInfo")
    assert first.value.classification == "auth"
    assert "credentials rejected" in str(first.value)
    assert PASSWORD not in str(first.value)

    with pytest.raises(MikoPBXError) as second:
        c.call("license.ping")
    assert second.value.classification == "auth"
    assert fake_http.count("POST", LOGIN) == 1
    assert c.request_count == 1


def test_v3_login_429_stops_with_rate_limited(fake_http):
    fake_http.add(
        "POST",
        LOGIN,
        Reply(
            429,
            json=v3_fail({"error": ["Too many login attempts, retry in 300 s"]}, "login", 429),
            headers={"Retry-After": "300"},
        ),
    )
    c = client()
    with pytest.raises(MikoPBXError) as info:
        c.settings()
    assert info.value.classification == "rate_limited"
    with pytest.raises(MikoPBXError):
        c.settings()
    assert fake_http.paths() == [LOGIN]


def test_legacy_rejected_login_at_http_200(fake_http):
    fake_http.add(
        "POST",
        LEGACY_LOGIN_PATH,
        Reply(json={"success": False, "reload": False, "message": {"error": ["Wrong password, 4 attempts left"]}}),
    )
    c = client(generation="legacy")
    with pytest.raises(MikoPBXError) as info:
        c.settings()
    assert info.value.classification == "auth"
    assert "4 attempts left" in str(info.value)
    with pytest.raises(MikoPBXError):
        c.call("license.getLicenseInfo")
    assert fake_http.paths() == [LEGACY_LOGIN_PATH]


def test_v3_expired_token_is_refreshed_once(fake_http):
    fake_http.add("POST", LOGIN, v3_login_ok())
    fake_http.add("GET", INFO_V3, Reply(401, json=v3_fail({"error": ["The user isn't authenticated."]})), info_ok())
    fake_http.add(
        "POST", REFRESH_PATH, Reply(json=v3_ok({"accessToken": JWT2, "tokenType": "Bearer", "expiresIn": 900}))
    )
    c = client()
    read_license_info(c)
    assert fake_http.paths() == [LOGIN, INFO_V3, REFRESH_PATH, INFO_V3]
    refresh = fake_http.requests[2]
    assert "refreshToken=" + REFRESH in refresh.headers["Cookie"]
    assert fake_http.requests[1].headers["Authorization"] == "Bearer " + JWT1
    assert fake_http.requests[3].headers["Authorization"] == "Bearer " + JWT2
    assert {JWT1, JWT2, REFRESH, PASSWORD} <= c.secrets


def test_v3_refused_refresh_leads_to_one_relogin(fake_http):
    fake_http.add("POST", LOGIN, v3_login_ok(JWT1), v3_login_ok(JWT2))
    fake_http.add("GET", INFO_V3, Reply(401, json=v3_fail({"error": ["The user isn't authenticated."]})), info_ok())
    fake_http.add("POST", REFRESH_PATH, Reply(401, json=v3_fail({"error": ["Refresh token expired"]})))
    c = client()
    read_license_info(c)
    assert fake_http.paths() == [LOGIN, INFO_V3, REFRESH_PATH, LOGIN, INFO_V3]


def test_v3_relogin_failure_after_refused_refresh_is_final(fake_http):
    fake_http.add("POST", LOGIN, v3_login_ok(JWT1), Reply(401, json=v3_fail({"error": ["Invalid login"]})))
    fake_http.add("GET", INFO_V3, Reply(401, json=v3_fail({"error": ["The user isn't authenticated."]})))
    fake_http.add("POST", REFRESH_PATH, Reply(401, json=v3_fail({"error": ["Refresh token expired"]})))
    c = client()
    with pytest.raises(MikoPBXError) as info:
        c.call("license.getLicenseInfo")
    assert info.value.classification == "auth"
    before = len(fake_http.requests)
    with pytest.raises(MikoPBXError):
        c.call("license.getLicenseInfo")
    # The next call needs a login, and a login already failed: nothing is sent.
    assert len(fake_http.requests) == before
    assert fake_http.count("POST", LOGIN) == 2


def test_api_key_rejected_is_auth_without_login(fake_http):
    fake_http.add("GET", INFO_V3, Reply(401, json=v3_fail({"error": ["The user isn't authenticated."]})))
    c = client(api_key=API_KEY)
    with pytest.raises(MikoPBXError) as info:
        c.call("license.getLicenseInfo")
    assert info.value.classification == "auth"
    assert "API key" in str(info.value)
    assert fake_http.paths() == [INFO_V3]
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value.to_dict())


def test_netrc_never_replaces_the_bearer_header(fake_http, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pbx.example.net login intruder password fromnetrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    fake_http.add("GET", INFO_V3, info_ok())
    fake_http.add("POST", LOGIN, v3_login_ok())
    read_license_info(client(api_key=API_KEY))
    assert fake_http.requests[0].headers["Authorization"] == "Bearer " + API_KEY
    client().generation  # noqa: B018 - login must not carry netrc basic auth either
    assert "Authorization" not in fake_http.requests[1].headers


# ------------------------------------------------------------------ retries


def test_safe_get_is_retried_on_503_with_backoff(fake_http):
    slept = []
    busy = Reply(503, json=v3_fail({"error": ["Service temporarily unavailable, please retry later"]}))
    fake_http.add("GET", INFO_V3, busy, busy, info_ok())
    c = client(api_key=API_KEY, sleep=slept.append)
    read_license_info(c)
    assert fake_http.count("GET", INFO_V3) == 3
    assert slept == [0.5, 1.0]


def test_retry_after_is_honoured_and_capped(fake_http):
    slept = []
    fake_http.add(
        "GET",
        INFO_V3,
        Reply(429, text="Too many requests", headers={"Retry-After": "7"}),
        Reply(429, text="Too many requests", headers={"Retry-After": "3600"}),
        info_ok(),
    )
    read_license_info(client(api_key=API_KEY, sleep=slept.append))
    assert slept == [7.0, MikoPBXClient.RETRY_AFTER_CAP]


def test_retries_are_bounded(fake_http):
    fake_http.add("GET", INFO_V3, Reply(502, text="<html>502 Bad Gateway</html>"))
    c = client(api_key=API_KEY, retries=2)
    with pytest.raises(MikoPBXError) as info:
        c.call("license.getLicenseInfo")
    assert fake_http.count("GET", INFO_V3) == 3
    assert info.value.status == 502


def test_rate_limit_exhausted_is_classified(fake_http):
    fake_http.add("GET", V3 + "license:ping", Reply(429, text="Too many requests"))
    with pytest.raises(MikoPBXError) as info:
        client(api_key=API_KEY, retries=1).call("license.ping")
    assert info.value.classification == "rate_limited"
    assert info.value.pbx_message == "Too many requests"


@pytest.mark.parametrize(
    "op, method, path, data",
    [
        ("license.processUserRequest", "POST", PUR_V3, {"licKey": KEY}),
        ("license.resetKey", "GET", V3 + "license:resetKey", None),
        ("modules.enable", "POST", V3 + "modules/ModuleX:enable", None),
    ],
)
def test_writes_are_never_retried(fake_http, op, method, path, data):
    fake_http.add(method, path, Reply(503, json=v3_fail({"error": ["Service temporarily unavailable"]})), info_ok())
    c = client(api_key=API_KEY)
    with pytest.raises(MikoPBXError):
        c.call(op, data=data, path_id="ModuleX" if "modules" in op else None)
    assert fake_http.count(method, path) == 1


def test_worker_timeout_on_read_is_retried(fake_http):
    fake_http.add(
        "GET", INFO_V3, Reply(400, json=v3_fail({"error": ["Request timeout or worker not responding"]})), info_ok()
    )
    read_license_info(client(api_key=API_KEY))
    assert fake_http.count("GET", INFO_V3) == 2


def test_worker_timeout_exhausted_is_timeout_class(fake_http):
    fake_http.add("GET", INFO_V3, Reply(400, json=v3_fail({"error": ["Request timeout or worker not responding"]})))
    with pytest.raises(MikoPBXError) as info:
        client(api_key=API_KEY, retries=0).call("license.getLicenseInfo")
    assert info.value.classification == "timeout"


def test_select_is_retried_on_database_locked_but_update_is_not(fake_http):
    locked = Reply(422, json=v3_fail({"error": ["SQLSTATE[HY000]: General error: 5 database is locked"]}))
    rows = Reply(json=v3_ok({"rows": [], "rowCount": 0}))
    fake_http.add("POST", SQL, locked, rows, locked)
    c = client(api_key=API_KEY)
    c.call("system.executeSqlRequest", data={"query": "SELECT 1", "database": "main"})
    assert fake_http.count("POST", SQL) == 2
    with pytest.raises(MikoPBXError):
        c.call(
            "system.executeSqlRequest", data={"query": "UPDATE m_PbxSettings SET value='' WHERE 1", "database": "main"}
        )
    assert fake_http.count("POST", SQL) == 3


def test_legacy_500_and_locked_result_false_are_retried_for_reads(fake_http):
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok())
    fake_http.add(
        "GET",
        INFO_LEGACY,
        Reply(500, json=legacy_errors(["500 (Internal Server Error) "])),
        Reply(json=legacy_fail({"error": ["database is locked"]})),
        Reply(json=legacy_ok({"licenseInfo": license_info_string()})),
    )
    info = read_license_info(client(generation="legacy"))
    assert info["key"] == KEY
    assert fake_http.count("GET", INFO_LEGACY) == 3


def test_connection_reset_is_retried_only_for_reads(fake_http):
    reset = requests.exceptions.ConnectionError(
        "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
    )
    fake_http.add("GET", INFO_V3, reset, info_ok())
    fake_http.add("POST", PUR_V3, reset)
    c = client(api_key=API_KEY)
    read_license_info(c)
    assert fake_http.count("GET", INFO_V3) == 2
    with pytest.raises(MikoPBXError) as info:
        apply_key(c, KEY)
    assert info.value.classification == "unreachable"
    assert fake_http.count("POST", PUR_V3) == 1


def test_login_is_never_retried(fake_http):
    fake_http.add("POST", LOGIN, Reply(503, json=v3_fail({"error": ["Service temporarily unavailable"]})))
    with pytest.raises(MikoPBXError):
        client().generation  # noqa: B018
    assert fake_http.count("POST", LOGIN) == 1


# ------------------------------------------------------------------ TLS and transport errors


def test_certificate_failure_is_tls_not_unreachable(fake_http):
    fake_http.add(
        "POST",
        LOGIN,
        requests.exceptions.SSLError(
            "HTTPSConnectionPool(host='pbx.example.net', port=443): Max retries exceeded (Caused by SSLError("
            "SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
            "certificate (_ssl.c:1000)')))"
        ),
    )
    with pytest.raises(MikoPBXError) as info:
        client().generation  # noqa: B018
    err = info.value
    assert err.classification == "tls"
    assert "certificate verify failed" in str(err)
    assert "ca_path" in err.hint and "validate_certs" in err.hint


def test_dns_or_refused_is_unreachable(fake_http):
    fake_http.add("GET", INFO_V3, requests.exceptions.ConnectionError("[Errno 111] Connection refused"))
    with pytest.raises(MikoPBXError) as info:
        client(api_key=API_KEY).call("license.getLicenseInfo")
    assert info.value.classification == "unreachable"
    assert fake_http.count("GET", INFO_V3) == 1


def test_read_timeout_is_timeout(fake_http):
    fake_http.add("GET", INFO_V3, requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(MikoPBXError) as info:
        client(api_key=API_KEY).call("license.getLicenseInfo")
    assert info.value.classification == "timeout"


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"validate_certs": False}, False),
        ({"ca_path": "/etc/pbx-ca.pem"}, "/etc/pbx-ca.pem"),
        ({"validate_certs": False, "ca_path": "/etc/pbx-ca.pem"}, "/etc/pbx-ca.pem"),
    ],
)
def test_tls_options_apply_to_every_request(fake_http, kwargs, expected):
    fake_http.add("POST", LOGIN, v3_login_ok(), v3_login_ok(JWT2))
    fake_http.add("GET", INFO_V3, Reply(401, json=v3_fail({"error": ["expired"]})), info_ok())
    fake_http.add("POST", REFRESH_PATH, Reply(401, json=v3_fail({"error": ["Refresh token expired"]})))
    fake_http.add("GET", "/admin-cabinet/pbx-extension-modules/index", Reply(text="<html></html>"))
    c = client(**kwargs)
    read_license_info(c)
    c.admin_page("/admin-cabinet/pbx-extension-modules/index")
    assert len(fake_http.requests) == 6
    assert [r.verify for r in fake_http.requests] == [expected] * 6


def test_validate_certs_default_is_on(fake_http):
    fake_http.add("GET", INFO_V3, info_ok())
    read_license_info(client(api_key=API_KEY))
    assert fake_http.requests[0].verify not in (False, None)


# ------------------------------------------------------------------ classification of answers


def test_v3_getlicenseinfo_2008_is_a_licence_error_with_cabinet_hint(fake_http):
    fake_http.add("GET", INFO_V3, Reply(422, json=v3_fail(["2008: feature capture failed"], "getLicenseInfo")))
    with pytest.raises(MikoPBXError) as info:
        read_license_info(client(api_key=API_KEY))
    err = info.value
    assert err.classification == "licence:2008" and err.licence_code == 2008
    assert "licence cabinet" in err.hint
    assert err.status == 422 and err.method == "GET" and err.path == INFO_V3


def test_licensing_service_silent_is_unreachable_with_firewall_hint(fake_http):
    fake_http.add(
        "POST",
        PUR_V3,
        Reply(503, json=v3_fail({"license": ["Licence server gave no answer"]}, "processUserRequest", 503)),
    )
    with pytest.raises(MikoPBXError) as info:
        apply_key(client(api_key=API_KEY), KEY)
    assert info.value.classification == "unreachable"
    assert "443" in info.value.hint and "firewall" in info.value.hint
    assert fake_http.count("POST", PUR_V3) == 1


def test_unknown_key_is_2026_not_network(fake_http):
    fake_http.add(
        "POST",
        PUR_V3,
        Reply(400, json=v3_fail({"license": ["The license key number is wrong"]}, "processUserRequest", 400)),
    )
    with pytest.raises(MikoPBXError) as info:
        apply_key(client(api_key=API_KEY), OTHER_KEY)
    assert info.value.classification == "licence:2026"
    assert "firewall" not in info.value.hint


@pytest.mark.parametrize(
    "status, body, classification",
    [
        (404, {"success": False, "messages": {"error": ["Endpoint not found"]}, "data": None}, "not_found"),
        (405, {"result": False, "messages": {"error": ["Method 'x' is not allowed with HTTP GET"]}}, "unsupported"),
        (422, v3_fail({"error": ["Unknown action - getList in X"]}), "unsupported"),
        (403, v3_fail({"error": ["Access denied. You do not have permission"]}), "auth"),
        (500, v3_fail({"error": ["SQL error"]}), "server"),
    ],
)
def test_status_classification(fake_http, status, body, classification):
    fake_http.add("GET", V3 + "license:ping", Reply(status, json=body))
    with pytest.raises(MikoPBXError) as info:
        client(api_key=API_KEY, retries=0).call("license.ping")
    assert info.value.classification == classification


def test_plain_text_403_from_nginx(fake_http):
    fake_http.add("GET", V3 + "license:ping", Reply(403, text="Access denied"))
    with pytest.raises(MikoPBXError) as info:
        client(api_key=API_KEY).call("license.ping")
    assert info.value.classification == "auth"
    assert "fail2ban" in info.value.hint


def test_op_missing_in_generation_is_unsupported_without_request(fake_http):
    c = client(api_key=API_KEY)
    with pytest.raises(MikoPBXError) as info:
        c.call("license.getMikoPBXFeatureStatus")
    assert info.value.classification == "unsupported"
    assert fake_http.requests == []


def test_allow_failure_returns_the_result(fake_http):
    fake_http.add("GET", V3 + "license:ping", Reply(422, json=v3_fail({"error": ["no ping"]})))
    result = client(api_key=API_KEY).call("license.ping", allow_failure=True)
    assert result.ok is False and result.status == 422
    assert result.messages["error"] == ["no ping"]


def test_module_path_id_goes_to_url_v3_and_body_legacy(fake_http):
    fake_http.add("POST", V3 + "modules/ModuleUsersUI:enable", Reply(json=v3_ok()))
    client(api_key=API_KEY).call("modules.enable", path_id="ModuleUsersUI")
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok())
    fake_http.add("POST", LEGACY + "modules/core/enableModule", Reply(json=legacy_ok()))
    client(generation="legacy").call("modules.enable", path_id="ModuleUsersUI")
    assert fake_http.requests[-1].form == {"uniqid": ["ModuleUsersUI"]}
    with pytest.raises(MikoPBXError):
        client(api_key=API_KEY).call("modules.enable", path_id="../etc")


# ------------------------------------------------------------------ settings and admin pages


def test_v3_settings_is_one_select_and_cached(fake_http):
    fake_http.add(
        "POST",
        SQL,
        Reply(
            json=v3_ok(
                {
                    "query": SETTINGS_SQL,
                    "database": "main",
                    "rows": [
                        {"key": "Name", "value": "PBX system"},
                        {"key": "PBXLicense", "value": KEY},
                        {"key": "PBXVersion", "value": "2026.1.223"},
                    ],
                    "rowCount": 3,
                    "affectedRows": 0,
                }
            )
        ),
    )
    c = client(api_key=API_KEY)
    assert c.settings() == {"PBXLicense": KEY, "PBXVersion": "2026.1.223", "Name": "PBX system"}
    assert c.settings()["PBXVersion"] == "2026.1.223"
    assert fake_http.count("POST", SQL) == 1
    assert fake_http.requests[0].json == {"query": SETTINGS_SQL, "database": "main"}
    assert KEY in c.secrets


LEGACY_PAGE = """<html><head><script>
var globalPBXLicense = 'MIKO-AAAAA-BBBBB-CCCCC-DDDDD';
var globalPBXVersion = '2024.1.114';
var globalWebAdminLanguage = 'en';
</script></head><body><table><tr class="module-row" data-id="ModuleX"></tr></table></body></html>"""


def test_legacy_settings_from_admin_page_which_stays_cached(fake_http):
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok())
    fake_http.add("GET", LEGACY_MODULES_PAGE, Reply(text=LEGACY_PAGE, headers={"Content-Type": "text/html"}))
    c = client(generation="legacy")
    settings = c.settings()
    assert settings["PBXLicense"] == KEY and settings["PBXVersion"] == "2024.1.114"
    assert "module-row" in c.admin_page(LEGACY_MODULES_PAGE)
    assert fake_http.count("GET", LEGACY_MODULES_PAGE) == 1
    assert KEY in c.secrets


def test_legacy_admin_page_login_redirect_triggers_one_relogin(fake_http):
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok(), legacy_login_ok())
    fake_http.add(
        "GET",
        LEGACY_MODULES_PAGE,
        Reply(302, text="", headers={"Location": "/admin-cabinet/session/index"}),
        Reply(text=LEGACY_PAGE),
    )
    c = client(generation="legacy")
    assert c.settings()["PBXVersion"] == "2024.1.114"
    assert fake_http.paths() == [LEGACY_LOGIN_PATH, LEGACY_MODULES_PAGE, LEGACY_LOGIN_PATH, LEGACY_MODULES_PAGE]


def test_legacy_empty_key_page(fake_http):
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok())
    fake_http.add("GET", LEGACY_MODULES_PAGE, Reply(text=LEGACY_PAGE.replace(KEY, "")))
    assert client(generation="legacy").settings()["PBXLicense"] == ""


# ------------------------------------------------------------------ licence helpers' quirks


def test_legacy_same_key_result_false_without_messages_is_not_a_failure(fake_http):
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok())
    fake_http.add("POST", PUR_LEGACY, Reply(json=legacy_fail([], "processUserRequest")))
    outcome = apply_key(client(generation="legacy"), KEY)
    assert outcome["same_key"] is True


def test_malformed_key_never_reaches_the_pbx(fake_http):
    c = client(api_key=API_KEY)
    with pytest.raises(MikoPBXError) as info:
        apply_key(c, "MIKO-AAAAA-BBBBB-CCCCC-DDDD")
    assert info.value.classification == "invalid_input"
    assert fake_http.requests == []


def test_coupon_failure_after_key_success(fake_http):
    body = v3_fail(
        {"info": ["Key activated"], "license": ["The coupon has already been used"]}, "processUserRequest", 502
    )
    fake_http.add("POST", PUR_V3, Reply(502, json=body))
    with pytest.raises(MikoPBXError) as info:
        apply_key(client(api_key=API_KEY), KEY, "mikoupd-aaaaa-bbbbb-ccccc-eeeee")
    assert info.value.classification == "licence:2041"
    assert fake_http.requests[0].json == {"licKey": KEY, "coupon": "MIKOUPD-AAAAA-BBBBB-CCCCC-EEEEE"}


def test_trial_registration_info_string_and_new_key_is_secret(fake_http):
    fake_http.add(
        "POST",
        PUR_V3,
        Reply(json=v3_ok({"PBXLicense": OTHER_KEY}, "processUserRequest", {"info": "Registration successful"})),
    )
    c = client(api_key=API_KEY)
    company = {"company_name": 'ООО "Ромашка"', "email": "a@example.com", "contact_name": "Иван"}
    key = register_trial(c, company)
    assert key == OTHER_KEY and OTHER_KEY in c.secrets
    sent = fake_http.requests[0]
    assert sent.json == {"companyname": 'ООО "Ромашка"', "email": "a@example.com", "contact": "Иван"}


def test_trial_2022_is_classified(fake_http):
    fake_http.add(
        "POST",
        PUR_V3,
        Reply(502, json=v3_fail({"license": ["2022: e-mail belongs to another company"]}, "processUserRequest", 502)),
    )
    with pytest.raises(MikoPBXError) as info:
        register_trial(client(api_key=API_KEY), {"company_name": "X", "email": "a@b.c", "contact_name": "Y"})
    assert info.value.classification == "licence:2022"
    assert fake_http.count("POST", PUR_V3) == 1


def test_reset_key_is_one_get(fake_http):
    fake_http.add("GET", V3 + "license:resetKey", Reply(json=v3_ok([], "resetKey")))
    reset_key(client(api_key=API_KEY))
    assert fake_http.calls() == [("GET", V3 + "license:resetKey")]


# ------------------------------------------------------------------ secrets


def test_errors_never_contain_secrets(fake_http):
    echo = "bad request for %s with %s by %s cookie PHPSESSID=%s" % (KEY, PASSWORD, JWT1, PHPSESSID)
    fake_http.add("POST", LOGIN, v3_login_ok())
    fake_http.add("POST", PUR_V3, Reply(422, json=v3_fail({"error": [echo]}, "processUserRequest")))
    c = client()
    with pytest.raises(MikoPBXError) as info:
        apply_key(c, KEY)
    rendered = " ".join([str(info.value), repr(info.value), repr(info.value.to_dict()), info.value.describe()])
    for secret in (KEY, PASSWORD, JWT1, PHPSESSID, REFRESH):
        assert secret not in rendered
    assert "MIKO-*****-*****-*****-DDDDD" in rendered


def test_keys_seen_in_answers_become_secrets(fake_http):
    fake_http.add("GET", INFO_V3, Reply(json=v3_ok({"licenseInfo": license_info_string(OTHER_KEY)})))
    c = client(api_key=API_KEY)
    seen = []
    c.secret_listeners.append(seen.append)
    read_license_info(c)
    assert OTHER_KEY in c.secrets and OTHER_KEY in seen


def test_url_is_normalised():
    c = MikoPBXClient("pbx.example.net:8443/", api_key=API_KEY)
    assert c.url == "https://pbx.example.net:8443"


def test_only_session_cookies_become_secrets(fake_http):
    fake_http.add(
        "POST",
        LEGACY_LOGIN_PATH,
        Reply(json={"success": True, "message": []}, cookies={"PHPSESSID": PHPSESSID, "lang": "en"}),
    )
    fake_http.add("GET", LEGACY + "license/ping", Reply(json=legacy_ok([], "ping")))
    c = client(generation="legacy")
    c.call("license.ping")
    assert PHPSESSID in c.secrets
    assert "en" not in c.secrets


def test_login_blocked_by_fail2ban_says_so(fake_http):
    fake_http.add("POST", LOGIN, Reply(403, text="Access denied"))
    with pytest.raises(MikoPBXError) as info:
        client().generation  # noqa: B018
    assert info.value.classification == "auth"
    assert "blocked" in str(info.value) and "credentials rejected" not in str(info.value)


# ------------------------------------------------------------------ failed logins across clients (tasks)


def test_refused_login_is_remembered_across_clients(fake_http, tmp_path, monkeypatch):
    monkeypatch.setenv("MIKOPBX_LOGIN_MEMO_DIR", str(tmp_path / "memo"))
    fake_http.add("POST", LOGIN, Reply(401, json=v3_fail({"error": ["Invalid login or password"]}, "login", 401)))
    with pytest.raises(MikoPBXError):
        client().generation  # noqa: B018
    assert fake_http.count("POST", LOGIN) == 1

    # The next task of the play, same credentials: fails at once, nothing sent.
    with pytest.raises(MikoPBXError) as info:
        client().call("license.ping")
    assert info.value.classification == "auth"
    assert "not attempted" in str(info.value)
    assert PASSWORD not in str(info.value)
    assert fake_http.count("POST", LOGIN) == 1
    memo_files = list((tmp_path / "memo").iterdir())
    assert len(memo_files) == 1 and PASSWORD not in memo_files[0].read_text()

    # A corrected password is tried, and its success clears the memo.
    fake_http.set("POST", LOGIN, v3_login_ok())
    client(password="corrected-password").generation  # noqa: B018
    assert fake_http.count("POST", LOGIN) == 2
    assert [p for p in (tmp_path / "memo").iterdir() if p.is_file()] == []  # sessions/ is the session cache


def test_remembered_refusal_expires(fake_http, tmp_path, monkeypatch):
    monkeypatch.setenv("MIKOPBX_LOGIN_MEMO_DIR", str(tmp_path / "memo"))
    fake_http.add(
        "POST", LOGIN, Reply(429, json=v3_fail({"error": ["Too many login attempts"]}, "login", 429)), v3_login_ok()
    )
    with pytest.raises(MikoPBXError) as first:
        client().generation  # noqa: B018
    assert first.value.classification == "rate_limited"
    with pytest.raises(MikoPBXError) as second:
        client().generation  # noqa: B018
    assert second.value.classification == "rate_limited"
    assert fake_http.count("POST", LOGIN) == 1

    import time as time_module

    later = time_module.time() + 301  # no Retry-After: the lockout is remembered for 300 s
    monkeypatch.setattr(time_module, "time", lambda: later)
    assert client().generation == "v3"
    assert fake_http.count("POST", LOGIN) == 2


def test_login_memo_can_be_switched_off(fake_http, monkeypatch):
    monkeypatch.setenv("MIKOPBX_LOGIN_MEMO", "0")
    fake_http.add("POST", LOGIN, Reply(401, json=v3_fail({"error": ["Invalid login or password"]}, "login", 401)))
    for _attempt in range(2):
        with pytest.raises(MikoPBXError):
            client().generation  # noqa: B018
    assert fake_http.count("POST", LOGIN) == 2


def test_legacy_with_api_key_and_login_never_sends_the_key(fake_http):
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok())
    fake_http.add("GET", LEGACY + "license/ping", Reply(json=legacy_ok([], "ping")))
    client(api_key=API_KEY, username="admin", password=PASSWORD, generation="legacy").call("license.ping")
    assert fake_http.paths() == [LEGACY_LOGIN_PATH, LEGACY + "license/ping"]
    assert all("Authorization" not in r.headers for r in fake_http.requests)


def test_login_lockout_is_remembered_as_long_as_retry_after(fake_http, tmp_path, monkeypatch):
    import json as json_module

    monkeypatch.setenv("MIKOPBX_LOGIN_MEMO_DIR", str(tmp_path / "memo"))
    fake_http.add("POST", LOGIN, Reply(429, text="Too many requests", headers={"Retry-After": "120"}))
    with pytest.raises(MikoPBXError) as info:
        client().generation  # noqa: B018
    assert info.value.classification == "rate_limited"
    (memo,) = (tmp_path / "memo").iterdir()
    assert json_module.loads(memo.read_text())["ttl"] == 120
