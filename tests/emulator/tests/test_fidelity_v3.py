"""Fidelity of the emulated v3 generation (MikoPBX 2026.1.x) against the API reference.

Each test names the reference section (``docs/mikopbx-api.md``) it checks.
Everything goes over real HTTPS with ``requests``, verifying the emulator CA.
"""

from __future__ import annotations

import json
import re

import pytest
from fidelity_helpers import (
    FEATURE_IDS_EMPTY,
    LICENSING_HOSTS,
    MODULES_PROCESSOR,
    NOT_AUTHENTICATED,
    body,
    describe,
    expect,
    fleet_fixture,
    jwt_header,
    jwt_payload,
    messages_of,
    module_row,
    parse_probe,
    probe_command,
    random_key,
    trial_fields,
)

# time scale 0.1: emulated time runs 10x faster; a test taking 2 s real costs 20 emulated seconds,
# small against the 600 s leeway / 300 s login window / 120 s cache margins used below.
fleet = fleet_fixture(count=36, generation="v3", time_scale=0.1, rate_limit=False)
# limiter on, real-time clock: the per-minute nginx limiter, which a slow CI machine cannot stretch here
rl_fleet = fleet_fixture(count=3, generation="v3", time_scale=1.0, name="rl_fleet")

V3 = "/pbxcore/api/v3"


def shared(fleet):
    """The first PBX: used by read-only tests that never change its state."""
    return fleet.pbx(fleet.names("v3")[0])


def take(fleet):
    """A PBX no other test of this module touches (never the shared one)."""
    used = getattr(fleet, "_used", set())
    fleet._used = used
    used.add(fleet.names("v3")[0])
    for n in fleet.names("v3"):
        if n not in used:
            used.add(n)
            return fleet.pbx(n)
    raise AssertionError("v3 fleet too small for this module")


def create_api_key(pbx, **fields):
    """generateKey + create with an admin JWT (§11.5); returns (plaintext key, create response)."""
    admin = pbx.bearer(pbx.jwt())
    gen = admin.post(pbx.url + V3 + "/api-keys:generateKey", json={}, timeout=30)
    data = expect(gen, 200, "§3.1.4/§11.5 generateKey")
    key = data["data"]["key"]
    payload = {"description": "fidelity", "key": key, **fields}
    resp = admin.post(pbx.url + V3 + "/api-keys", json=payload, timeout=30)
    return key, resp


# ------------------------------------------------------------------------------------------ §1


def test_generation_detection_v3_ping_is_public(fleet):
    """§1 generation detection: GET /pbxcore/api/v3/system:ping answers 200 result:true without credentials."""
    pbx = shared(fleet)
    resp = pbx.anon().get(pbx.url + V3 + "/system:ping", timeout=30)
    data = expect(resp, 200, "§1")
    assert data["result"] is True, describe(resp)


def test_nginx_pong_without_auth(fleet):
    """§1/§8.1: GET /pbxcore/api/system/ping is nginx's static PONG, no authentication, both generations."""
    pbx = shared(fleet)
    resp = pbx.anon().get(pbx.url + "/pbxcore/api/system/ping", timeout=30)
    assert resp.status_code == 200 and resp.text.strip() == "PONG", describe(resp)


# ------------------------------------------------------------------------------------------ §3 auth


def test_unauthenticated_call_is_401_pbxapiresult_shaped(fleet):
    """§3.1 step 4 + §4: no credentials from a non-localhost view -> 401, PBXApiResult-shaped error, no jsonapi."""
    pbx = shared(fleet)
    resp = pbx.anon().get(pbx.url + V3 + "/system:checkAuth", timeout=30)
    data = expect(resp, 401, "§3.1")
    assert data["result"] is False, describe(resp)
    assert data["messages"]["error"] == [NOT_AUTHENTICATED], describe(resp)
    assert data["data"] == [], describe(resp)
    assert data["function"] == "" and data["processor"] == "" and isinstance(data["pid"], int), describe(resp)
    assert "jsonapi" not in data and "errors" not in data, describe(resp)
    assert set(data["meta"]) >= {"timestamp", "hash"}, describe(resp)
    assert resp.headers.get("Access-Control-Allow-Origin") == "*", "CORS header on every response (§2)"


def test_inventory_api_key_authenticates(fleet):
    """§3.1.4 + §8.1: the inventory's full-permission API key as Bearer -> system:checkAuth 200 result:true."""
    pbx = shared(fleet)
    resp = pbx.bearer().get(pbx.url + V3 + "/system:checkAuth", timeout=30)
    data = expect(resp, 200, "§8.1 checkAuth")
    assert data["result"] is True, describe(resp)


def test_unknown_bearer_is_401(fleet):
    """§3.1 step 2: a Bearer that is neither a valid JWT nor a known API key -> 401."""
    pbx = shared(fleet)
    resp = pbx.bearer("0" * 64).get(pbx.url + V3 + "/system:checkAuth", timeout=30)
    data = expect(resp, 401, "§3.1")
    assert data["messages"]["error"] == [NOT_AUTHENTICATED], describe(resp)


def test_login_json_success_shape_and_cookie(fleet):
    """§3.1.1: JSON login -> 200, data {accessToken, tokenType Bearer, expiresIn 900, login}; refreshToken cookie
    HttpOnly, SameSite=Strict, Secure (HTTPS), Path=/, no Expires without rememberMe."""
    pbx = shared(fleet)
    resp = pbx.v3_login()
    data = expect(resp, 200, "§3.1.1")
    assert data["result"] is True, describe(resp)
    d = data["data"]
    assert d["tokenType"] == "Bearer" and d["expiresIn"] == 900 and d["login"] == pbx.username, describe(resp)
    assert isinstance(d["accessToken"], str) and d["accessToken"].count(".") == 2, describe(resp)
    assert data["function"] == "login", describe(resp)
    set_cookie = resp.headers.get("Set-Cookie", "")
    assert "refreshToken=" in set_cookie, f"no refreshToken cookie: {set_cookie!r}"
    low = set_cookie.lower()
    for attr in ("httponly", "samesite=strict", "secure", "path=/"):
        assert attr in low, f"refreshToken cookie lacks {attr}: {set_cookie!r}"
    assert "expires=" not in low, f"session cookie expected without rememberMe (§3.1.1): {set_cookie!r}"


def test_login_remember_me_only_for_json_true(fleet):
    """§3.1.1: rememberMe JSON true -> persistent cookie (Expires); the form value "true" is not === true ->
    session cookie."""
    pbx = shared(fleet)
    resp = pbx.v3_login(rememberMe=True)
    expect(resp, 200, "§3.1.1")
    assert "expires=" in resp.headers.get("Set-Cookie", "").lower(), resp.headers.get("Set-Cookie")
    resp = pbx.anon().post(
        pbx.url + V3 + "/auth:login",
        data={"login": pbx.username, "password": pbx.password, "rememberMe": "true"},
        timeout=30,
    )
    expect(resp, 200, "§3.1.1 form login")
    set_cookie = resp.headers.get("Set-Cookie", "").lower()
    assert "refreshtoken=" in set_cookie and "expires=" not in set_cookie, set_cookie


def test_login_form_encoded_and_query_merge(fleet):
    """§3.1.1: the body may be form-urlencoded; query-string parameters are merged on top."""
    pbx = shared(fleet)
    s = pbx.anon()
    resp = s.post(pbx.url + V3 + "/auth:login", data={"login": pbx.username, "password": pbx.password}, timeout=30)
    data = expect(resp, 200, "§3.1.1 form body")
    assert data["data"]["accessToken"], describe(resp)
    resp = s.post(
        pbx.url + V3 + "/auth:login",
        params={"password": pbx.password},
        data={"login": pbx.username, "password": "not-the-password"},
        timeout=30,
    )
    expect(resp, 200, "§3.1.1 query parameters merged on top of the body")


def test_jwt_claims(fleet):
    """§3.1.1 JWT details: HS256 header, payload {userId, role, language, iat, exp, nbf}, TTL 900,
    admin role admins."""
    pbx = shared(fleet)
    token = pbx.jwt()
    assert jwt_header(token) == {"typ": "JWT", "alg": "HS256"}, jwt_header(token)
    claims = jwt_payload(token)
    assert {"userId", "role", "language", "iat", "exp", "nbf"} <= set(claims), claims
    assert claims["role"] == "admins", claims
    assert claims["exp"] - claims["iat"] == 900, claims
    resp = pbx.bearer(token).get(pbx.url + V3 + "/system:checkAuth", timeout=30)
    expect(resp, 200, "§3.1 JWT Bearer")


def test_login_wrong_password_401(fleet):
    """§3.1.1 errors: wrong credentials -> 401, result false, an error message."""
    pbx = shared(fleet)
    resp = pbx.v3_login(password="definitely-wrong")
    data = expect(resp, 401, "§3.1.1")
    assert data["result"] is False and messages_of(data, "error"), describe(resp)
    assert "refreshtoken=" not in resp.headers.get("Set-Cookie", "").lower(), describe(resp)


def test_login_without_credentials_400(fleet):
    """§3.1.1 errors: neither login+password nor sessionToken -> 400."""
    pbx = shared(fleet)
    resp = pbx.anon().post(pbx.url + V3 + "/auth:login", json={}, timeout=30)
    data = expect(resp, 400, "§3.1.1", sent={})
    assert data["result"] is False and messages_of(data, "error"), describe(resp)


def test_login_failure_limit_429_then_window_expires(fleet):
    """§3.1.1: 10 failed logins in the 5-min window -> the next attempt (even with the right password) is 429;
    after the window it works again."""
    pbx = take(fleet)
    for i in range(10):
        resp = pbx.v3_login(password=f"wrong-{i}")
        expect(resp, 401, f"§3.1.1 failed attempt {i + 1} of 10")
    resp = pbx.v3_login()
    data = expect(resp, 429, "§3.1.1 (>= 10 failures in the window)")
    assert data["result"] is False and messages_of(data, "error"), describe(resp)
    fleet.control.advance(301)
    resp = pbx.v3_login()
    expect(resp, 200, "§3.1.1 (new 5-min window)")


def test_jwt_valid_within_leeway_then_expires(fleet):
    """§3.1.1: access TTL 900 s, accepted until exp + 600 s, rejected afterwards (401)."""
    pbx = shared(fleet)
    token = pbx.jwt()
    s = pbx.bearer(token)
    fleet.control.advance(1300)  # ~1300-1400 s after iat: past exp, inside the leeway
    resp = s.get(pbx.url + V3 + "/system:checkAuth", timeout=30)
    expect(resp, 200, "§3.1.1 leeway (exp + 600 s)")
    fleet.control.advance(300)  # > 1600 s after iat: past exp + leeway
    resp = s.get(pbx.url + V3 + "/system:checkAuth", timeout=30)
    data = expect(resp, 401, "§3.1.1 token past exp + 600 s")
    assert data["messages"]["error"] == [NOT_AUTHENTICATED], describe(resp)


def test_refresh_returns_new_token_and_is_not_rotated(fleet):
    """§3.1.2: auth:refresh with the cookie -> 200 {accessToken, tokenType, expiresIn 900, homePage}; the refresh
    token is not rotated (the same cookie keeps working)."""
    pbx = shared(fleet)
    s = pbx.anon()
    expect(pbx.v3_login(s), 200, "§3.1.1")
    cookie = s.cookies.get("refreshToken")
    assert cookie, "no refreshToken cookie stored by the client"
    for attempt in (1, 2):
        resp = s.post(pbx.url + V3 + "/auth:refresh", timeout=30)
        data = expect(resp, 200, f"§3.1.2 refresh #{attempt}")
        d = data["data"]
        assert d["tokenType"] == "Bearer" and d["expiresIn"] == 900 and "homePage" in d, describe(resp)
        assert s.cookies.get("refreshToken") == cookie, "refresh token rotated; §3.1.2 says it is not"
        check = pbx.bearer(d["accessToken"]).get(pbx.url + V3 + "/system:checkAuth", timeout=30)
        expect(check, 200, "§3.1.2 refreshed access token")


def test_refresh_without_or_with_unknown_cookie_401(fleet):
    """§3.1.2 errors: no cookie -> 401; unknown token -> 401."""
    pbx = shared(fleet)
    resp = pbx.anon().post(pbx.url + V3 + "/auth:refresh", timeout=30)
    data = expect(resp, 401, "§3.1.2 no cookie")
    assert data["result"] is False, describe(resp)
    s = pbx.anon()
    s.cookies.set("refreshToken", "ab" * 32)
    resp = s.post(pbx.url + V3 + "/auth:refresh", timeout=30)
    expect(resp, 401, "§3.1.2 unknown refresh token")


def test_logout_requires_bearer_keeps_jwt(fleet):
    """§3.1.3: logout without Bearer -> 401; with Bearer -> 200 {"message":"Successfully logged out"}; the JWT
    itself stays valid until it expires."""
    pbx = shared(fleet)
    s = pbx.anon()
    token = expect(pbx.v3_login(s), 200, "§3.1.1")["data"]["accessToken"]
    resp = s.post(pbx.url + V3 + "/auth:logout", timeout=30)
    expect(resp, 401, "§3.1.3 logout without Bearer")
    s.headers["Authorization"] = f"Bearer {token}"
    resp = s.post(pbx.url + V3 + "/auth:logout", timeout=30)
    data = expect(resp, 200, "§3.1.3")
    assert data["result"] is True and data["data"] == {"message": "Successfully logged out"}, describe(resp)
    cleared = resp.headers.get("Set-Cookie", "").lower()
    assert "refreshtoken=" in cleared and ("max-age=0" in cleared or "expires=" in cleared), (
        f"logout must clear the refreshToken cookie (§3.1.3): {cleared!r}"
    )
    resp = pbx.bearer(token).get(pbx.url + V3 + "/system:checkAuth", timeout=30)
    expect(resp, 200, "§3.1.3 JWT stays valid after logout")


def test_refresh_refused_after_logout(fleet):
    """§3.1.3: logout deletes the refresh token named by the cookie -> a later refresh with it is 401."""
    pbx = shared(fleet)
    s = pbx.anon()
    token = expect(pbx.v3_login(s), 200, "§3.1.1")["data"]["accessToken"]
    cookie = s.cookies.get("refreshToken")
    out = pbx.bearer(token)
    out.cookies.set("refreshToken", cookie)
    expect(out.post(pbx.url + V3 + "/auth:logout", timeout=30), 200, "§3.1.3")
    replay = pbx.anon()
    replay.cookies.set("refreshToken", cookie)
    resp = replay.post(pbx.url + V3 + "/auth:refresh", timeout=30)
    expect(resp, 401, "§3.1.3 refresh token deleted by logout")


# ------------------------------------------------------------------------------------------ §3.1.4 API keys


def test_api_key_lifecycle(fleet):
    """§3.1.4 / §11.5: generateKey -> 64 hex; create -> 201 with the documented record fields, httpCode 201,
    reload api-keys/modify/{id}; the key authenticates; after DELETE it is refused (cache flushed)."""
    pbx = shared(fleet)
    key, resp = create_api_key(pbx, full_permissions=True)
    assert re.fullmatch(r"[0-9a-f]{64}", key), key
    data = expect(resp, 201, "§11.5 create")
    rec = data["data"]
    assert data["result"] is True and data.get("httpCode") == 201, describe(resp)
    assert isinstance(rec["id"], str) and rec["id"].isdigit(), describe(resp)
    assert data.get("reload") == f"api-keys/modify/{rec['id']}", describe(resp)
    assert rec["key_display"] == f"{key[:5]}...{key[-5:]}", describe(resp)
    assert rec["full_permissions"] is True and rec["allowed_paths"] == {} and rec["has_key"] is True, describe(resp)
    for f in (
        "description",
        "created_at",
        "last_used_at",
        "networkfilterid",
        "allowed_paths_count",
        "networkfilter_represent",
        "has_network_filter",
        "represent",
    ):
        assert f in rec, f"record field {f} missing (§3.1.4): {describe(resp)}"
    assert key not in resp.text, "the plaintext key must never be returned by create (§3.1.4)"
    expect(pbx.bearer(key).get(pbx.url + V3 + "/system:checkAuth", timeout=30), 200, "§3.1.4 new key")
    admin = pbx.bearer(pbx.jwt())
    one = admin.get(pbx.url + V3 + f"/api-keys/{rec['id']}", timeout=30)
    assert expect(one, 200, "§3.1.4 GET /api-keys/{id}")["data"]["id"] == rec["id"], describe(one)
    listing = admin.get(pbx.url + V3 + "/api-keys", timeout=30)
    rows = expect(listing, 200, "§3.1.4 list")["data"]
    assert isinstance(rows, list) and any(r["id"] == rec["id"] for r in rows), describe(listing)
    assert key not in one.text and key not in listing.text, "stored keys are bcrypt hashes, never returned (§3.1.4)"
    expect(admin.delete(pbx.url + V3 + f"/api-keys/{rec['id']}", timeout=30), 200, "§3.1.4 delete")
    expect(pbx.bearer(key).get(pbx.url + V3 + "/system:checkAuth", timeout=30), 401, "§3.1.4 deleted key")


def test_generate_key_stores_nothing(fleet):
    """§3.1.4: api-keys:generateKey only returns random hex; the value is not a usable key until created."""
    pbx = shared(fleet)
    admin = pbx.bearer(pbx.jwt())
    data = expect(admin.post(pbx.url + V3 + "/api-keys:generateKey", json={}, timeout=30), 200, "§3.1.4")
    resp = pbx.bearer(data["data"]["key"]).get(pbx.url + V3 + "/system:checkAuth", timeout=30)
    expect(resp, 401, "§3.1.4 generateKey stores nothing")


def test_scoped_read_key_on_license(fleet):
    """§3.1.4: allowed_paths {"/api/v3/license": "read"} allows every licence GET (even resetKey), refuses POST
    processUserRequest and other resources -- every denial is 401, never 403."""
    pbx = take(fleet)
    key, resp = create_api_key(pbx, allowed_paths={"/api/v3/license": "read"})
    expect(resp, 201, "§3.1.4 create scoped key")
    s = pbx.bearer(key)
    info = s.get(pbx.url + V3 + "/license:getLicenseInfo", timeout=30)
    assert info.status_code not in (401, 403), f"GET on a read-granted path refused: {describe(info)}"
    reset = s.get(pbx.url + V3 + "/license:resetKey", timeout=30)
    expect(reset, 200, "§3.1.4 (read on /api/v3/license admits the destructive GET resetKey)")
    for method, path, payload in (
        ("POST", "/license:processUserRequest", {"licKey": random_key()}),
        ("GET", "/system:checkAuth", None),
        ("POST", "/modules/ModuleTemplate:enable", {}),
    ):
        resp = s.request(method, pbx.url + V3 + path, json=payload, timeout=30)
        data = expect(resp, 401, "§3.1.4 (denial is 401, not 403)", sent=payload)
        assert data["messages"]["error"] == [NOT_AUTHENTICATED], describe(resp)


def test_scoped_write_key_allows_post(fleet):
    """§3.1.4: "write" on /api/v3/license admits POST license:processUserRequest (reaches the processor)."""
    pbx = shared(fleet)
    key, resp = create_api_key(pbx, allowed_paths={"/api/v3/license": "write"})
    expect(resp, 201, "§3.1.4")
    sent = {"licKey": random_key()}
    resp = pbx.bearer(key).post(pbx.url + V3 + "/license:processUserRequest", json=sent, timeout=30)
    expect(resp, 400, "§3.1.4 write scope + §5.2 unknown key", sent=sent)


def test_module_operations_need_full_permission_key(fleet):
    """§3.1.4 / §7.2: a module call reduces to /api/v3/modules/{CamelCase} which cannot be granted -> a key scoped
    to /api/v3/modules (write) still gets 401 on modules/{id}:enable."""
    pbx = shared(fleet)
    key, resp = create_api_key(pbx, allowed_paths={"/api/v3/modules": "write"})
    expect(resp, 201, "§3.1.4")
    resp = pbx.bearer(key).post(pbx.url + V3 + "/modules/ModuleTemplate:enable", json={}, timeout=30)
    expect(resp, 401, "§3.1.4 module ops need full permissions")


@pytest.mark.parametrize(
    "paths",
    [
        {"/api/v3/License": "read"},
        {"/api/v3/license": "admin"},
        {"/api/v3/x": "read"},
        {"/pbxcore/api/v3/license": "read"},
    ],
)
def test_allowed_paths_validation_422(fleet, paths):
    """§3.1.4: each allowed path must match ^/api/v[0-9]+/[a-z0-9-]+(/[a-z0-9-]+)*$, 10-255 chars, permission
    read|write -- otherwise 422."""
    pbx = shared(fleet)
    _key, resp = create_api_key(pbx, allowed_paths=paths)
    data = expect(resp, 422, "§3.1.4 allowed_paths validation", sent=paths)
    assert data["result"] is False, describe(resp)


def test_update_unknown_api_key_404(fleet):
    """§3.1.4: PUT /api-keys/{id} with an unknown id -> 404."""
    pbx = shared(fleet)
    admin = pbx.bearer(pbx.jwt())
    resp = admin.put(pbx.url + V3 + "/api-keys/987654", json={"description": "x"}, timeout=30)
    expect(resp, 404, "§3.1.4")


# ------------------------------------------------------------------------------------------ §4 envelope


def test_envelope_fields_and_headers(fleet):
    """§4: v3 envelope = PBXApiResult {result, data, messages, function, processor, pid} + meta{timestamp, hash},
    no jsonapi; CORS Access-Control-Allow-Origin: * (§2)."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/license:ping")
    data = expect(resp, 200, "§5.1 ping")
    for f in ("result", "data", "messages", "function", "processor", "pid", "meta"):
        assert f in data, f"{f} missing from envelope: {describe(resp)}"
    assert "jsonapi" not in data, describe(resp)
    assert data["function"] == "ping" and isinstance(data["pid"], int), describe(resp)
    assert data["data"] == [] and data["messages"] == [], describe(resp)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", data["meta"]["timestamp"]), describe(resp)
    assert resp.headers.get("Access-Control-Allow-Origin") == "*", dict(resp.headers)
    assert resp.headers.get("Content-Type", "").startswith("application/json"), dict(resp.headers)
    assert re.fullmatch(r"[0-9a-f]{40}", data["meta"]["hash"]), f"meta.hash is a sha1 (§4): {data['meta']}"


def test_unknown_route_404_success_false(fleet):
    """§4 / §11.8: no route -> 404 {"success":false, messages.error ["Endpoint not found: <uri>"], data null} --
    note `success`, not `result`."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/licence:ping")
    data = expect(resp, 404, "§4 no route")
    assert data["success"] is False and "result" not in data, describe(resp)
    assert data["messages"]["error"] == ["Endpoint not found: /pbxcore/api/v3/licence:ping"], describe(resp)
    assert data["data"] is None and "meta" in data, describe(resp)


def test_legacy_core_routes_gone_404(fleet):
    """§1: in 2026 the legacy core routes (/pbxcore/api/license/*) no longer exist -> 404."""
    pbx = shared(fleet)
    resp = pbx.get("/pbxcore/api/license/getLicenseInfo")
    expect(resp, 404, "§1 legacy route on v3")


def test_feature_status_removed_405(fleet):
    """§5.1 / §11.8: license:getMikoPBXFeatureStatus was removed -> 405
    "Method '…' is not allowed with HTTP GET"."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/license:getMikoPBXFeatureStatus")
    data = expect(resp, 405, "§5.1")
    assert data["result"] is False, describe(resp)
    assert data["messages"]["error"] == ["Method 'getMikoPBXFeatureStatus' is not allowed with HTTP GET"], describe(
        resp
    )


def test_custom_method_wrong_verb_405(fleet):
    """§4: a custom method not mapped for the verb -> 405 (processUserRequest is POST only)."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/license:processUserRequest")
    data = expect(resp, 405, "§4")
    assert data["messages"]["error"] == ["Method 'processUserRequest' is not allowed with HTTP GET"], describe(resp)


def test_unknown_processor_action_422(fleet):
    """§4 / §7.2 / §11.8: GET /v3/modules -> 422 "Unknown action - getList in …ModulesManagementProcessor"."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/modules")
    data = expect(resp, 422, "§4 unknown action")
    assert data["result"] is False and data["function"] == "getList", describe(resp)
    assert data["messages"]["error"] == [f"Unknown action - getList in {MODULES_PROCESSOR}"], describe(resp)


def test_license_without_method_422(fleet):
    """§5.1: GET /v3/license (no method) -> 422 "Unknown action - getList"."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/license")
    data = expect(resp, 422, "§5.1")
    assert messages_of(data, "error") and messages_of(data, "error")[0].startswith("Unknown action - getList"), (
        describe(resp)
    )


# ------------------------------------------------------------------------------------------ §5 licence


def test_get_license_info_without_key_400(fleet):
    """§5.2 / §11.2: empty PBXLicense -> 400, result false, messages.error [lic_WrongLicenseKeyOrEmpty], httpCode."""
    pbx = take(fleet)
    assert fleet.control.license_key(pbx.name) == ""
    resp = pbx.lic_info()
    data = expect(resp, 400, "§11.2")
    assert data["result"] is False and data["data"] == [], describe(resp)
    assert len(data["messages"]["error"]) == 1 and data["messages"]["error"][0], describe(resp)
    assert data.get("httpCode") == 400 and data["function"] == "getLicenseInfo", describe(resp)


def test_apply_key_then_license_info_is_json_string(fleet):
    """§5.2 / §11.3 / §5.4: a new valid key -> 200 {PBXLicense}, messages.info list; getLicenseInfo -> licenseInfo is
    a JSON *string* whose @attributes.key is the key and whose MikoPBX product has the base feature."""
    pbx = take(fleet)
    key = fleet.control.create_company(companyname="Fidelity Ltd", email="fid@example.com")
    sent = {"licKey": key}
    resp = pbx.lic_request(sent)
    data = expect(resp, 200, "§11.3 key accepted", sent)
    assert data["result"] is True and data["data"] == {"PBXLicense": key}, describe(resp)
    assert isinstance(data["messages"]["info"], list) and data["messages"]["info"], describe(resp)
    assert fleet.control.license_key(pbx.name) == key
    resp = pbx.lic_info()
    data = expect(resp, 200, "§5.2 getLicenseInfo")
    raw = data["data"]["licenseInfo"]
    assert isinstance(raw, str), f"licenseInfo must be a JSON string (§5.2): {describe(resp)}"
    info = json.loads(raw)
    assert info["@attributes"]["key"] == key and info["@attributes"]["companyname"] == "Fidelity Ltd", info
    products = info["product"] if isinstance(info["product"], list) else [info["product"]]
    mikopbx = [p for p in products if p["@attributes"]["name"] == "MikoPBX"]
    assert mikopbx, info
    feats = mikopbx[0]["feature"]
    feats = feats if isinstance(feats, list) else [feats]
    base = [f for f in feats if f["@attributes"]["name"] == "MikoPBX base"]
    assert base and all(isinstance(v, str) for v in base[0]["@attributes"].values()), info
    assert base[0]["@attributes"]["captured"] == "1", info


def test_same_key_again_is_idempotent_without_server_call(fleet):
    """§5.2 v3: the stored key again -> no server call, 200 result true, PBXLicense, messages.info
    [lic_SuccessfulActivation] -- it answers so even when the licensing service is down."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§5.2 first apply")
    fleet.control.add_fault(pbx.name, "licensing_down")
    try:
        resp = pbx.lic_request({"licKey": key})
    finally:
        fleet.control.clear_faults(pbx.name)
    data = expect(resp, 200, "§5.2 same key (no server call)", {"licKey": key})
    assert data["result"] is True and data["data"] == {"PBXLicense": key}, describe(resp)
    assert isinstance(data["messages"]["info"], list) and len(data["messages"]["info"]) == 1, describe(resp)


def test_unknown_key_400_nothing_stored(fleet):
    """§5.2 / §11.3: a well-formed key the server does not know -> 400, messages.license, stored key unchanged."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§5.2")
    sent = {"licKey": random_key()}
    resp = pbx.lic_request(sent)
    data = expect(resp, 400, "§5.2 2026 -> 400", sent)
    assert data["result"] is False and data["data"] == [], describe(resp)
    assert messages_of(data, "license") and not messages_of(data, "error"), describe(resp)
    assert data.get("httpCode") == 400, describe(resp)
    assert fleet.control.license_key(pbx.name) == key, "stored key changed after a rejected key (§5.2)"


def test_malformed_key_silently_becomes_trial_registration(fleet):
    """§5.2 step 2: a key that is not 28 chars / MIKO- is not rejected: the request becomes a trial registration;
    success -> result true, new PBXLicense, messages.info as a *string*."""
    pbx = take(fleet)
    sent = {"licKey": "MIKO-AAAAA-BBBBB-CCCCC-DDDD", **trial_fields()}
    resp = pbx.lic_request(sent)
    data = expect(resp, 200, "§5.2 trial", sent)
    assert data["result"] is True, describe(resp)
    new_key = data["data"]["PBXLicense"]
    assert re.fullmatch(r"MIKO-[A-Z0-9]{5}(-[A-Z0-9]{5}){3}", new_key) and new_key != sent["licKey"], describe(resp)
    assert isinstance(data["messages"]["info"], str), f"trial success info must be a string (§4): {describe(resp)}"
    assert fleet.control.license_key(pbx.name) == new_key


def test_reset_key_is_get_and_empties_license(fleet):
    """§5.2 resetKey: GET, always result true, data []; PBXLicense becomes ''."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§5.2")
    resp = pbx.lic_reset()
    data = expect(resp, 200, "§5.2 resetKey")
    assert data["result"] is True and data["data"] == [], describe(resp)
    assert fleet.control.license_key(pbx.name) == ""
    assert not [s for s in fleet.control.seats(key) if s["machine_id"] == fleet.control.machine_id(pbx.name)]


def test_ping_and_send_metrics(fleet):
    """§5.2: license:ping -> 200 result true data []; license:sendPBXMetrics -> result true immediately."""
    pbx = shared(fleet)
    for action in ("ping", "sendPBXMetrics"):
        resp = pbx.get(pbx.lic_path(action))
        data = expect(resp, 200, f"§5.2 {action}")
        assert data["result"] is True and data["data"] == [], describe(resp)


def test_capture_feature_with_empty_ids_422(fleet):
    """§5.2 captureFeatureForProductId: empty ids -> 422, messages.error ["The feature id or product id is
    empty."]."""
    pbx = shared(fleet)
    resp = pbx.post(pbx.lic_path("captureFeatureForProductId"), json={})
    data = expect(resp, 422, "§5.2")
    assert data["result"] is False and data["messages"]["error"] == [FEATURE_IDS_EMPTY], describe(resp)


def test_license_info_cached_120s_and_failure_is_plain_list(fleet):
    """§5.2: getLicenseInfo is cached 120 s per key (a seat freed in the cabinet is not seen at once); afterwards
    the failure is 422 with messages as a plain list holding the raw library error (2008)."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§5.2")
    expect(pbx.lic_info(), 200, "§5.2 first read (fills the cache)")
    fleet.control.free_seat(key, fleet.control.machine_id(pbx.name))
    expect(pbx.lic_info(), 200, "§5.2 cached answer within 120 s")
    fleet.control.advance(125)
    resp = pbx.lic_info()
    data = expect(resp, 422, "§5.2 v3 failure after the cache expired")
    assert data["result"] is False, describe(resp)
    assert isinstance(data["messages"], list) and data["messages"], (
        f"v3 getLicenseInfo failure: messages must be a plain list (§5.2): {describe(resp)}"
    )
    assert any("2008" in str(m) for m in data["messages"]), describe(resp)


# ------------------------------------------------------------------------------------------ §6 settings


def test_general_settings_name_and_refused_version(fleet):
    """§6: GET general-settings/Name -> data {"Name": …}; PBXVersion is not exposed -> 422 with the quoted text."""
    pbx = shared(fleet)
    state = fleet.control.state(pbx.name)
    resp = pbx.get(V3 + "/general-settings/Name")
    data = expect(resp, 200, "§6")
    assert data["data"] == {"Name": state["settings"]["Name"]}, describe(resp)
    resp = pbx.get(V3 + "/general-settings/PBXVersion")
    data = expect(resp, 422, "§6")
    assert data["messages"]["error"] == ["Setting 'PBXVersion' is not accessible through this API"], describe(resp)


def test_sql_select_settings(fleet):
    """§6: system:executeSqlRequest SELECT on m_PbxSettings -> data {query, database, rows, rowCount, affectedRows};
    values equal the PBX's settings."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§5.2")
    query = "SELECT key, value FROM m_PbxSettings WHERE key IN ('PBXLicense','PBXVersion','Name')"
    resp = pbx.sql(query)
    data = expect(resp, 200, "§6 executeSqlRequest", query)
    d = data["data"]
    assert d["query"] == query and d["database"] == "main" and d["affectedRows"] == 0, describe(resp)
    rows = {r["key"]: r["value"] for r in d["rows"]}
    assert d["rowCount"] == len(d["rows"]) == 3, describe(resp)
    settings = fleet.control.state(pbx.name)["settings"]
    assert rows == {"PBXLicense": key, "PBXVersion": settings["PBXVersion"], "Name": settings["Name"]}, rows


def test_sql_empty_query_400(fleet):
    """§6: executeSqlRequest with an empty query -> 400."""
    pbx = shared(fleet)
    resp = pbx.sql("")
    expect(resp, 400, "§6 empty query")


# ------------------------------------------------------------------------------------------ §7 modules


def test_sql_modules_rows(fleet):
    """§7.4 / §11.7: the modules SELECT returns the table rows with string `disabled` and the reason columns."""
    pbx = take(fleet)
    rows = [module_row("ModuleTemplate"), module_row("ModuleBackup", disabled=True, reason="", text="")]
    fleet.control.set_modules(pbx.name, rows)
    query = "SELECT uniqid,name,version,disabled,disableReason,disableReasonText FROM m_PbxExtensionModules"
    resp = pbx.sql(query)
    data = expect(resp, 200, "§11.7", query)
    got = {r["uniqid"]: r for r in data["data"]["rows"]}
    assert set(got) == {"ModuleTemplate", "ModuleBackup"}, describe(resp)
    assert got["ModuleTemplate"]["disabled"] == "0" and got["ModuleBackup"]["disabled"] == "1", got
    assert set(got["ModuleTemplate"]) == {
        "uniqid",
        "name",
        "version",
        "disabled",
        "disableReason",
        "disableReasonText",
    }, got


def test_enable_does_not_clear_disable_reason(fleet):
    """§7.1: enabling sets disabled='0' but leaves disableReason/disableReasonText as they were."""
    pbx = take(fleet)
    fleet.control.set_modules(
        pbx.name, [module_row("ModuleTemplate", disabled=True, reason="DisabledByException", text="Boom in module")]
    )
    resp = pbx.module_enable("ModuleTemplate")
    data = expect(resp, 200, "§7.2 enable")
    assert data["result"] is True, describe(resp)
    row = fleet.control.modules(pbx.name)["ModuleTemplate"]
    assert str(row["disabled"]) == "0", row
    assert row["disableReason"] == "DisabledByException" and row["disableReasonText"] == "Boom in module", row


def test_disable_stores_reason_as_given(fleet):
    """§7.1 / §7.2: v3 disable stores the reason as given (the 2026 UI sends '' for a user disable)."""
    pbx = take(fleet)
    fleet.control.set_modules(pbx.name, [module_row("ModuleTemplate"), module_row("ModuleBackup")])
    expect(pbx.module_disable("ModuleTemplate", ""), 200, "§7.2 disable")
    expect(pbx.module_disable("ModuleBackup", "DisabledByException", "trace"), 200, "§7.2 disable")
    mods = fleet.control.modules(pbx.name)
    assert str(mods["ModuleTemplate"]["disabled"]) == "1" and mods["ModuleTemplate"]["disableReason"] == "", mods
    assert mods["ModuleBackup"]["disableReason"] == "DisabledByException", mods
    assert mods["ModuleBackup"]["disableReasonText"] == "trace", mods


def test_enable_licensed_module_without_licence_422(fleet):
    """§7.4 / §11.6: enabling a module with lic_feature_id > 0 that the licence does not cover -> 422,
    messages.license; the row is disabled='1', disableReason='DisabledByLicense'."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§5.2")
    fleet.control.set_modules(
        pbx.name, [module_row("ModuleUsersUI", disabled=True, reason="", feature=201, product=101)]
    )
    resp = pbx.module_enable("ModuleUsersUI")
    data = expect(resp, 422, "§11.6")
    assert data["result"] is False and messages_of(data, "license"), describe(resp)
    row = fleet.control.modules(pbx.name)["ModuleUsersUI"]
    assert str(row["disabled"]) == "1" and row["disableReason"] == "DisabledByLicense", row
    assert row["disableReasonText"], row


def test_admin_page_markers(fleet):
    """§7.4 admin page markers: <tr class="module-row" data-id data-version>, checked="checked" when enabled, a
    licence-disabled module shows the key icon group with the reason text in data-html."""
    pbx = take(fleet)
    fleet.control.set_modules(
        pbx.name,
        [
            module_row("ModuleTemplate", version="1.0.0"),
            module_row(
                "ModuleUsersUI",
                disabled=True,
                reason="DisabledByLicense",
                text="2008: licence missing",
                feature=201,
                product=101,
                version="1.3.2",
            ),
        ],
    )
    resp = pbx.bearer(pbx.jwt()).get(pbx.url + "/admin-cabinet/pbx-extension-modules/index", timeout=30)
    assert resp.status_code == 200, describe(resp)
    html = resp.text
    rows = dict(re.findall(r'<tr[^>]*class="module-row"[^>]*data-id="(\w+)"[^>]*>(.*?)</tr>', html, re.DOTALL))
    assert set(rows) == {"ModuleTemplate", "ModuleUsersUI"}, html[:2000]
    assert 'data-version="1.3.2"' in html, html[:2000]
    assert 'checked="checked"' in rows["ModuleTemplate"] and 'checked="checked"' not in rows["ModuleUsersUI"], rows
    assert "key icon" in rows["ModuleUsersUI"] and "2008: licence missing" in rows["ModuleUsersUI"], rows


# ------------------------------------------------------------------------------------------ §8 system info


def test_sysinfo_content_has_version(fleet):
    """§8.1 / §6: sysinfo:getInfo data.content is text whose first section is PBXVersion with the version line."""
    pbx = shared(fleet)
    version = fleet.control.state(pbx.name)["settings"]["PBXVersion"]
    resp = pbx.get(V3 + "/sysinfo:getInfo")
    data = expect(resp, 200, "§8.1")
    content = data["data"]["content"]
    assert isinstance(content, str), describe(resp)
    lines = [ln.strip() for ln in content.splitlines() if ln.strip()]
    idx = next(i for i, ln in enumerate(lines) if "PBXVersion" in ln)
    assert version in lines[idx + 1], f"version {version!r} not right after the PBXVersion header: {lines[:6]}"
    assert version.startswith("2026.1"), f"v3 generation is 2026.1.x (§0): {version}"


def test_network_config_hostname(fleet):
    """§8.1: network:getConfig -> data.interfaces[] with hostname, domain, ipaddr, internet."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/network:getConfig")
    data = expect(resp, 200, "§8.1")
    ifaces = data["data"]["interfaces"]
    assert isinstance(ifaces, list) and ifaces, describe(resp)
    assert {"hostname", "domain", "ipaddr", "internet"} <= set(ifaces[0]), describe(resp)


def test_reachability_probe_format(fleet):
    """design §5: the probe command (marker mikopbx-probe-v1) -> data {command, output, exitCode, timeout}, one
    MIKOPBX-PROBE line per host; without faults every host is exit 0 with an HTTP status."""
    pbx = shared(fleet)
    cmd = probe_command(list(LICENSING_HOSTS), 443, 5)
    resp = pbx.bash(cmd)
    data = expect(resp, 200, "design §5", cmd)
    d = data["data"]
    assert set(d) >= {"command", "output", "exitCode", "timeout"} and d["command"] == cmd, describe(resp)
    rows = parse_probe(d["output"])
    assert set(rows) == set(LICENSING_HOSTS), d["output"]
    for host, row in rows.items():
        assert row["exit"] == "0" and row["http"] != "000" and int(row["http"]) < 500, (host, row)


def test_other_bash_commands_refused(fleet):
    """design §5: the emulator refuses any command other than the probe."""
    pbx = shared(fleet)
    resp = pbx.bash("id")
    data = body(resp)
    assert resp.status_code != 200 or (isinstance(data, dict) and data.get("result") is False), describe(resp)


# ------------------------------------------------------------------------------------------ design §2 kinds


def test_request_log_kinds(fleet):
    """design §2 request kinds: login = auth, SELECT = read, GET resetKey = write, never a secret in the log."""
    pbx = take(fleet)
    fleet.control.clear_requests(pbx.name)
    pbx.v3_login()
    pbx.sql("SELECT uniqid FROM m_PbxExtensionModules")
    pbx.lic_reset()
    pbx.get(V3 + "/system:checkAuth")
    log = fleet.control.requests_log(pbx.name)
    kinds = [(e["path"].split("?")[0], e["kind"]) for e in log]
    assert (V3 + "/auth:login", "auth") in kinds, log
    assert (V3 + "/system:executeSqlRequest", "read") in kinds, log
    assert (V3 + "/license:resetKey", "write") in kinds, log
    assert (V3 + "/system:checkAuth", "read") in kinds, log
    text = json.dumps(log)
    assert pbx.password not in text and (pbx.api_key or "§") not in text, "secret in the request log"


# ------------------------------------------------------------------------------------------ more §3 / §4 / §9


def test_public_endpoint_ignores_a_bad_bearer(fleet):
    """§3.1 step 1: on a public endpoint a Bearer token is parsed but its failure ignored -> system:ping 200."""
    pbx = shared(fleet)
    resp = pbx.bearer("not-a-token").get(pbx.url + V3 + "/system:ping", timeout=30)
    data = expect(resp, 200, "§3.1 public endpoint")
    assert data["result"] is True, describe(resp)


def test_validate_token_from_non_local_address_403(fleet):
    """§3.1.3: auth:validateToken is internal; from a non-local address it answers 403 {"error": "…"}."""
    pbx = shared(fleet)
    token = pbx.jwt()
    resp = pbx.anon().get(pbx.url + V3 + "/auth:validateToken", params={"token": token}, timeout=30)
    data = expect(resp, 403, "§3.1.3")
    assert isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"], describe(resp)


def test_localhost_bypass_but_bearer_still_validated(fleet):
    """§3.1 steps 2-3 / §3.1.5: a localhost request without Authorization is let in without credentials, but a
    Bearer header is validated even from localhost (bad token -> 401).  The emulator marks a request as local with
    the header X-Emulator-Localhost: 1 (its listeners are all on 127.0.0.1)."""
    pbx = shared(fleet)
    local = {"X-Emulator-Localhost": "1"}
    resp = pbx.anon().get(pbx.url + V3 + "/system:checkAuth", headers=local, timeout=30)
    expect(resp, 200, "§3.1 step 3 (localhost, no Authorization)")
    resp = pbx.bearer("f" * 64).get(pbx.url + V3 + "/system:checkAuth", headers=local, timeout=30)
    expect(resp, 401, "§3.1 step 2 (Bearer validated even from localhost)")


def test_refresh_limit_100_per_5_minutes(fleet):
    """§3.1.2: more than 100 refreshes per 5 min per IP -> 429."""
    pbx = take(fleet)
    s = pbx.anon()
    expect(pbx.v3_login(s), 200, "§3.1.1")
    statuses = []
    for _n in range(101):
        statuses.append(s.post(pbx.url + V3 + "/auth:refresh", timeout=30).status_code)
    assert statuses[:100] == [200] * 100, f"first 100 refreshes must succeed: {statuses}"
    resp = s.post(pbx.url + V3 + "/auth:refresh", timeout=30)
    data = expect(resp, 429, "§3.1.2 (101st+ refresh within 5 min)")
    assert data["result"] is False, describe(resp)
    fleet.control.advance(301)
    expect(s.post(pbx.url + V3 + "/auth:refresh", timeout=30), 200, "§3.1.2 new window")


def test_api_key_update_flushes_permission_cache(fleet):
    """§3.1.4: lookups are cached per token but every update flushes the cache -- raising a key from read to write
    on /api/v3/license admits POST at once."""
    pbx = take(fleet)
    key, resp = create_api_key(pbx, allowed_paths={"/api/v3/license": "read"})
    rec_id = expect(resp, 201, "§3.1.4")["data"]["id"]
    s = pbx.bearer(key)
    sent = {"licKey": random_key()}
    expect(s.post(pbx.url + V3 + "/license:processUserRequest", json=sent, timeout=30), 401, "§3.1.4 read scope")
    admin = pbx.bearer(pbx.jwt())
    upd = admin.patch(
        pbx.url + V3 + f"/api-keys/{rec_id}", json={"allowed_paths": {"/api/v3/license": "write"}}, timeout=30
    )
    expect(upd, 200, "§3.1.4 PATCH")
    expect(
        s.post(pbx.url + V3 + "/license:processUserRequest", json=sent, timeout=30),
        400,
        "§3.1.4 write scope after the update (cache flushed) + §5.2 unknown key",
    )


def test_api_key_path_reduction_drops_numeric_id(fleet):
    """§3.1.4: the request path is reduced to a base path (strip /pbxcore, :method, a trailing numeric id), so a
    key with read on /api/v3/api-keys may GET /api-keys/{id}; GET needs read or write, DELETE needs write."""
    pbx = shared(fleet)
    key, resp = create_api_key(pbx, allowed_paths={"/api/v3/api-keys": "read"})
    rec_id = expect(resp, 201, "§3.1.4")["data"]["id"]
    s = pbx.bearer(key)
    expect(s.get(pbx.url + V3 + f"/api-keys/{rec_id}", timeout=30), 200, "§3.1.4 id segment dropped")
    expect(s.delete(pbx.url + V3 + f"/api-keys/{rec_id}", timeout=30), 401, "§3.1.4 DELETE needs write")
    wkey, resp = create_api_key(pbx, allowed_paths={"/api/v3/api-keys": "write"})
    expect(resp, 201, "§3.1.4")
    expect(pbx.bearer(wkey).get(pbx.url + V3 + f"/api-keys/{rec_id}", timeout=30), 200, "§3.1.4 write admits GET")


def test_async_channel_header_answers_at_once(fleet):
    """§4: with header X-Async-Response-Channel-Id the v3 controller answers at once with a bare
    {"success":true, "processor", "action", "meta"} -- not a PBXApiResult."""
    pbx = take(fleet)
    fleet.control.set_modules(pbx.name, [module_row("ModuleTemplate", disabled=True)])
    resp = pbx.post(
        V3 + "/modules/ModuleTemplate:enable", json={}, headers={"X-Async-Response-Channel-Id": "fidelity-channel"}
    )
    data = expect(resp, 200, "§4 async header")
    assert data.get("success") is True and "result" not in data, describe(resp)
    assert {"processor", "action", "meta"} <= set(data), describe(resp)


def test_etag_header_and_no_httpcode_on_plain_success(fleet):
    """§4: responses carry an E-Tag header; httpCode appears only when the action set it (not on a plain 200)."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/system:checkAuth")
    data = expect(resp, 200, "§8.1")
    assert resp.headers.get("E-Tag"), dict(resp.headers)
    assert "httpCode" not in data, describe(resp)


def test_general_settings_full_read(fleet):
    """§6: GET general-settings -> data {settings:{…}, codecs:[…], passwordValidation:{…}}; PBXVersion and
    PBXLicense are not exposed there."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/general-settings")
    data = expect(resp, 200, "§6")
    d = data["data"]
    assert isinstance(d["settings"], dict) and isinstance(d["codecs"], list), describe(resp)
    assert isinstance(d["passwordValidation"], dict), describe(resp)
    assert "PBXVersion" not in d["settings"] and "PBXLicense" not in d["settings"], sorted(d["settings"])
    assert d["settings"].get("Name") == fleet.control.state(pbx.name)["settings"]["Name"], d["settings"]


def test_license_info_with_malformed_stored_key_400(fleet):
    """§5.2: getLicenseInfo requires the stored key to be 28 chars with prefix MIKO-; a malformed stored key ->
    400 messages.error (no server call)."""
    pbx = take(fleet)
    fleet.control.set_license_key(pbx.name, "MIKO-SHORT", bind=False)
    resp = pbx.lic_info()
    data = expect(resp, 400, "§5.2 malformed stored key")
    assert data["result"] is False and len(messages_of(data, "error")) == 1, describe(resp)


def test_available_modules_and_module_info(fleet):
    """§7.2: modules:getAvailableModules -> data.modules[] with uniqid, name, version, commercial, release_id, …;
    modules/{id}:getModuleInfo -> lic_feature_id, lic_product_id, releases[]; an unknown module -> result false
    with the plain-list message ["Wrong module info"] (HTTP 422)."""
    pbx = shared(fleet)
    resp = pbx.get(V3 + "/modules:getAvailableModules")
    data = expect(resp, 200, "§7.2")
    mods = data["data"]["modules"]
    assert isinstance(mods, list) and mods, describe(resp)
    for f in (
        "uniqid",
        "name",
        "description",
        "developer",
        "version",
        "min_pbx_version",
        "commercial",
        "release_id",
        "size",
    ):
        assert f in mods[0], f"{f} missing from marketplace row: {mods[0]}"
    uniqid = mods[0]["uniqid"]
    resp = pbx.get(V3 + f"/modules/{uniqid}:getModuleInfo")
    info = expect(resp, 200, "§7.2 getModuleInfo")["data"]
    for f in ("uniqid", "name", "commercial", "lic_feature_id", "lic_product_id", "releases"):
        assert f in info, f"{f} missing from module info: {info}"
    assert isinstance(info["releases"], list) and {"releaseID", "version"} <= set(info["releases"][0]), info
    resp = pbx.get(V3 + "/modules/ModuleDoesNotExist:getModuleInfo")
    data = expect(resp, 422, "§7.2 unknown module")
    assert data["result"] is False and data["messages"] == ["Wrong module info"], describe(resp)


def test_nginx_rate_limit_180_per_minute_plus_burst(rl_fleet):
    """§9: nginx Lua limiter, per client IP 180 requests/min + 20 burst for /pbxcore/api/* -> plain-text 429
    "Too many requests"; the IP stays blocked (300 s), then is admitted again."""
    fleet = rl_fleet
    pbx = fleet.pbx(fleet.names()[0])
    s = pbx.anon()
    first_429 = None
    for i in range(1, 241):
        resp = s.get(pbx.url + V3 + "/system:ping", timeout=30)
        if resp.status_code == 429:
            first_429 = i
            break
        assert resp.status_code == 200, describe(resp)
    assert first_429 is not None, "no 429 after 240 requests within seconds (§9: 180/min + 20 burst)"
    assert 181 <= first_429 <= 201, f"first 429 at request #{first_429}; §9 allows 180/min + 20 burst"
    assert resp.text.strip() == "Too many requests" and body(resp) is None, describe(resp)
    expect(
        s.get(pbx.url + V3 + "/system:checkAuth", headers={"Authorization": f"Bearer {pbx.api_key}"}, timeout=30),
        429,
        "§9 the block covers authenticated calls too",
    )
    fleet.control.advance(301)
    expect(s.get(pbx.url + V3 + "/system:ping", timeout=30), 200, "§9 block over after 300 s")
    # second offence: the block doubles (600 s)
    for _n in range(260):
        resp = s.get(pbx.url + V3 + "/system:ping", timeout=30)
        if resp.status_code == 429:
            break
    assert resp.status_code == 429, "no 429 on the second burst (§9)"
    fleet.control.advance(301)
    expect(s.get(pbx.url + V3 + "/system:ping", timeout=30), 429, "§9 second block lasts 600 s (doubling)")
    fleet.control.advance(300)
    expect(s.get(pbx.url + V3 + "/system:ping", timeout=30), 200, "§9 second block over after 600 s")


def test_certificate_valid_for_localhost_name(fleet):
    """design §2 / §2 TLS: each PBX certificate carries SAN 127.0.0.1 and localhost and is signed by the emulator
    CA; v3 speaks TLS 1.2/1.3."""
    import socket
    import ssl

    pbx = shared(fleet)
    port = int(pbx.url.rsplit(":", 1)[1])
    resp = pbx.anon().get(f"https://localhost:{port}/pbxcore/api/v3/system:ping", timeout=30)
    expect(resp, 200, "design §2 SAN localhost")
    import requests

    with pytest.raises(requests.exceptions.SSLError, match="certificate verify failed"):
        pbx.anon().get(pbx.url + V3 + "/system:ping", timeout=30, verify=True)  # system CAs only (FC-19)
    ctx = ssl.create_default_context(cafile=pbx.ca)
    for server_name in ("127.0.0.1", pbx.name):  # SAN: the address and the PBX name
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3"), tls.version()


def test_fail2ban_counts_failed_logins_not_401s(fleet):
    """§3.1.1 / §3.2: in 2026 only failed logins feed the mikopbx-www jail (20 failures / 600 s -> 600 s ban);
    plain 401s on REST calls do not.  After 20 failed logins inside 600 s the client is refused at the network
    level (timeout / refused, or nginx 403 'Access denied')."""
    import requests

    pbx = take(fleet)
    anon = pbx.anon()
    for _n in range(30):
        expect(anon.get(pbx.url + V3 + "/system:checkAuth", timeout=30), 401, "§3.1")
    expect(pbx.bearer().get(pbx.url + V3 + "/system:checkAuth", timeout=30), 200, "401s alone never ban (2026)")
    for i in range(10):
        expect(pbx.v3_login(password=f"bad-{i}"), 401, "§3.1.1")
    fleet.control.advance(301)  # new app-level login window; still inside the 600 s jail window
    for i in range(10):
        expect(pbx.v3_login(password=f"worse-{i}"), 401, "§3.1.1")
    try:
        resp = pbx.bearer().get(pbx.url + V3 + "/system:checkAuth", timeout=3)
        assert resp.status_code == 403, f"20 failed logins in 600 s must ban the client (§3.1.1): {describe(resp)}"
    except (requests.ConnectionError, requests.Timeout):
        pass
    fleet.control.advance(601)
    expect(pbx.bearer().get(pbx.url + V3 + "/system:checkAuth", timeout=30), 200, "§3.1.1 the 2026 ban lasts 600 s")


def test_admin_page_exception_and_crash_loop_icons(fleet):
    """§7.1 / §7.4 (2026): DisabledByException shows a red bug icon, the new DisabledByCrashLoop a red redo icon;
    neither shows the licence key icon."""
    pbx = take(fleet)
    fleet.control.set_modules(pbx.name, [
        module_row("ModuleBackup", disabled=True, reason="DisabledByException", text="Fatal error"),
        module_row("ModuleTemplate", disabled=True, reason="DisabledByCrashLoop", text="restarted 5 times"),
    ])  # fmt: skip
    resp = pbx.bearer(pbx.jwt()).get(pbx.url + "/admin-cabinet/pbx-extension-modules/index", timeout=30)
    assert resp.status_code == 200, describe(resp)
    rows = dict(re.findall(r'<tr[^>]*class="module-row"[^>]*data-id="(\w+)"[^>]*>(.*?)</tr>', resp.text, re.DOTALL))
    assert "bug icon" in rows["ModuleBackup"] and "key icon" not in rows["ModuleBackup"], rows["ModuleBackup"]
    assert "redo icon" in rows["ModuleTemplate"] and "key icon" not in rows["ModuleTemplate"], rows["ModuleTemplate"]


def test_sysinfo_hypervisor_dmi_and_external_ip(fleet):
    """§8.1: sysinfo:getHypervisorInfo -> data {Hypervisor, environment_type, cpu_architecture}; getDMIInfo ->
    data {DMI, environment_type, cpu_architecture} (both always HTTP 200); getExternalIpInfo -> data.ip, and with
    no Internet still HTTP 200 with result false and messages ["Error format data "]."""
    pbx = take(fleet)
    for action, key in (("getHypervisorInfo", "Hypervisor"), ("getDMIInfo", "DMI")):
        resp = pbx.get(V3 + f"/sysinfo:{action}")
        data = expect(resp, 200, f"§8.1 {action} (always 200)")
        assert {key, "environment_type", "cpu_architecture"} <= set(data["data"]), describe(resp)
    resp = pbx.get(V3 + "/sysinfo:getExternalIpInfo")
    data = expect(resp, 200, "§8.1 getExternalIpInfo")
    assert data["result"] is True and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", data["data"]["ip"]), describe(resp)
    fleet.control.add_fault(pbx.name, "egress_blocked", hosts=["checkip.amazonaws.com"])
    try:
        resp = pbx.get(V3 + "/sysinfo:getExternalIpInfo")
    finally:
        fleet.control.clear_faults(pbx.name)
    data = expect(resp, 200, "§8.1 getExternalIpInfo offline (always 200)")
    assert data["result"] is False and data["messages"] == ["Error format data "], describe(resp)


def test_process_user_request_accepts_form_body(fleet):
    """§3.1.1 / §5.3: v3 bodies may be JSON or form-urlencoded (the admin UI posts the licence form as form
    data) -- a form licKey is applied like a JSON one."""
    pbx = take(fleet)
    key = fleet.control.create_company()
    resp = pbx.post(pbx.lic_path("processUserRequest"), data={"licKey": key})
    data = expect(resp, 200, "§11.3 form body", {"licKey": key})
    assert data["result"] is True and data["data"] == {"PBXLicense": key}, describe(resp)
    assert fleet.control.license_key(pbx.name) == key


@pytest.mark.parametrize(
    "fields",
    [
        {"description": "", "full_permissions": True},
        {"description": "x" * 256, "full_permissions": True},
        {"description": "short key", "key": "ab" * 8, "full_permissions": True},
        {"description": "netfilter", "networkfilterid": "localhost", "full_permissions": True},
    ],
    ids=["empty-description", "long-description", "key-too-short", "networkfilter-localhost"],
)
def test_api_key_record_validation_422(fleet, fields):
    """§3.1.4: description required (1-255), key 32-255 chars, networkfilterid "none" or numeric (the input
    pattern refuses "localhost") -- otherwise 422."""
    pbx = shared(fleet)
    admin = pbx.bearer(pbx.jwt())
    resp = admin.post(pbx.url + V3 + "/api-keys", json=fields, timeout=30)
    data = expect(resp, 422, "§3.1.4 record validation", fields)
    assert data["result"] is False, describe(resp)


def test_api_key_created_without_key_never_reveals_it(fleet):
    """§3.1.4: without `key` the server generates one but never returns the plaintext (has_key true, only
    key_display)."""
    pbx = shared(fleet)
    admin = pbx.bearer(pbx.jwt())
    resp = admin.post(pbx.url + V3 + "/api-keys", json={"description": "auto"}, timeout=30)
    data = expect(resp, 201, "§3.1.4 create without key")
    rec = data["data"]
    assert rec["has_key"] is True and "key" not in rec and rec["full_permissions"] is False, describe(resp)
    assert not re.search(r"[0-9a-f]{32,}", json.dumps(rec)), f"a full key seems to be returned: {describe(resp)}"


def test_rate_limit_switched_off_by_setting(rl_fleet):
    """§9: PBXRateLimitEnabled=0 (what MikoPBX's own test-suite sets with PATCH general-settings) switches the
    nginx limiter off -- 250 quick requests all answer."""
    pbx = rl_fleet.pbx(rl_fleet.names()[1])
    resp = pbx.request("PATCH", V3 + "/general-settings", json={"settings": {"PBXRateLimitEnabled": "0"}})
    expect(resp, 200, "§9 / §6 PATCH general-settings")
    s = pbx.anon()
    codes = {s.get(pbx.url + V3 + "/system:ping", timeout=30).status_code for _n in range(250)}
    assert codes == {200}, codes


def test_rate_limit_exempts_localhost(rl_fleet):
    """§9: localhost is exempt from the nginx limiter (the emulator marks local requests with
    X-Emulator-Localhost: 1)."""
    pbx = rl_fleet.pbx(rl_fleet.names()[2])
    s = pbx.anon()
    s.headers["X-Emulator-Localhost"] = "1"
    codes = {s.get(pbx.url + V3 + "/system:ping", timeout=30).status_code for _n in range(250)}
    assert codes == {200}, codes


def test_refresh_token_lives_30_days(fleet):
    """§3.1.2: the refresh token lives 30 days -- a refresh after 29 days works, after 30+ days it is 401."""
    pbx = take(fleet)
    s = pbx.anon()
    expect(pbx.v3_login(s), 200, "§3.1.1")
    fleet.control.advance(29 * 86400)
    expect(s.post(pbx.url + V3 + "/auth:refresh", timeout=30), 200, "§3.1.2 within 30 days")
    fleet.control.advance(86400 + 60)
    resp = s.post(pbx.url + V3 + "/auth:refresh", timeout=30)
    data = expect(resp, 401, "§3.1.2 refresh token past 30 days")
    assert data["result"] is False, describe(resp)


def test_advice_list_shape(fleet):
    """§8.1: advice:getList -> data.advice = {warning: [...], ...}; with www.google.com unreachable a warning
    with messageTpl adv_ProblemWithInternetConnection is listed."""
    pbx = take(fleet)
    resp = pbx.get(V3 + "/advice:getList")
    data = expect(resp, 200, "§8.1 advice")
    assert isinstance(data["data"]["advice"], dict), describe(resp)
    fleet.control.add_fault(pbx.name, "egress_blocked", hosts=["www.google.com"])
    try:
        resp = pbx.get(V3 + "/advice:getList")
    finally:
        fleet.control.clear_faults(pbx.name)
    data = expect(resp, 200, "§8.1 advice offline")
    warnings = data["data"]["advice"].get("warning", [])
    assert any(w.get("messageTpl") == "adv_ProblemWithInternetConnection" for w in warnings), describe(resp)


def test_api_keys_list_pagination_and_default(fleet):
    """§3.1.4 / §9: GET api-keys is a plain array; pagination applies only when limit/offset is given;
    GET api-keys:getDefault answers a template record."""
    pbx = take(fleet)
    admin = pbx.bearer(pbx.jwt())
    for i in range(3):
        expect(admin.post(pbx.url + V3 + "/api-keys", json={"description": f"page-{i}"}, timeout=30), 201, "§3.1.4")
    everything = expect(admin.get(pbx.url + V3 + "/api-keys", timeout=30), 200, "§3.1.4 list")["data"]
    assert isinstance(everything, list) and len(everything) >= 4, everything  # + the inventory key
    page = expect(
        admin.get(pbx.url + V3 + "/api-keys", params={"limit": 1, "offset": 1}, timeout=30), 200, "§9 pagination"
    )["data"]
    assert isinstance(page, list) and len(page) == 1 and page[0]["id"] == everything[1]["id"], page
    default = expect(admin.get(pbx.url + V3 + "/api-keys:getDefault", timeout=30), 200, "§3.1.4 getDefault")
    assert isinstance(default["data"], dict) and "description" in default["data"], default


def test_sql_error_is_500(fleet):
    """§6: system:executeSqlRequest answers 500 on an SQL error (e.g. an unknown table)."""
    pbx = shared(fleet)
    resp = pbx.sql("SELECT * FROM m_NoSuchTable")
    data = expect(resp, 500, "§6 SQL error")
    assert data["result"] is False and messages_of(data, "error"), describe(resp)


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [("GET", "/modules/ModuleTemplate", "getRecord"), ("POST", "/modules", "create"),
     ("GET", "/modules:getDefault", "getDefault")],
)  # fmt: skip
def test_modules_crud_not_implemented_422(fleet, method, path, action):
    """§7.2: the modules resource has no CRUD in the processor -> 422 "Unknown action - <action> in …"."""
    pbx = shared(fleet)
    resp = pbx.request(method, V3 + path, json={} if method == "POST" else None)
    data = expect(resp, 422, "§7.2 modules CRUD")
    assert data["messages"]["error"] == [f"Unknown action - {action} in {MODULES_PROCESSOR}"], describe(resp)


def test_reset_key_is_get_only_405_on_post(fleet):
    """§5.1: license:resetKey is mapped for GET; POST -> 405 "Method 'resetKey' is not allowed with HTTP POST"."""
    pbx = shared(fleet)
    resp = pbx.post(V3 + "/license:resetKey", json={})
    data = expect(resp, 405, "§5.1 / §4")
    assert data["messages"]["error"] == ["Method 'resetKey' is not allowed with HTTP POST"], describe(resp)


def test_login_language_reaches_the_token(fleet):
    """§3.1.1: the optional `language` of auth:login is stored in the JWT."""
    pbx = shared(fleet)
    resp = pbx.v3_login(language="ru")
    data = expect(resp, 200, "§3.1.1")
    assert jwt_payload(data["data"]["accessToken"]).get("language") == "ru", jwt_payload(data["data"]["accessToken"])


def test_credentials_do_not_cross_pbxs(fleet):
    """§3.1.1 / §3.1.4: each PBX signs JWTs with its own JWTSecret and keeps its own API keys and refresh tokens --
    a token, key or refresh cookie of one PBX is refused (401) by another."""
    a, b = fleet.pbx(fleet.names("v3")[0]), fleet.pbx(fleet.names("v3")[1])
    s = a.anon()
    token = expect(a.v3_login(s), 200, "§3.1.1")["data"]["accessToken"]
    expect(b.bearer(token).get(b.url + V3 + "/system:checkAuth", timeout=30), 401, "§3.1.1 foreign JWT")
    expect(b.bearer(a.api_key).get(b.url + V3 + "/system:checkAuth", timeout=30), 401, "§3.1.4 foreign API key")
    foreign = b.anon()
    foreign.cookies.set("refreshToken", s.cookies.get("refreshToken"))
    expect(foreign.post(b.url + V3 + "/auth:refresh", timeout=30), 401, "§3.1.2 foreign refresh token")


def test_bash_command_default_timeout_and_empty_command(fleet):
    """§6: executeBashCommand `timeout` defaults to 30 s (echoed in data.timeout); an empty command is refused."""
    pbx = shared(fleet)
    cmd = probe_command(["lic.mikopbx.com"])
    resp = pbx.post(V3 + "/system:executeBashCommand", json={"command": cmd})
    data = expect(resp, 200, "§6 / design §5")
    assert data["data"]["timeout"] == 30 and data["data"]["exitCode"] == 0, describe(resp)
    resp = pbx.post(V3 + "/system:executeBashCommand", json={"command": ""})
    data = body(resp)
    assert resp.status_code in (400, 422) and data["result"] is False, describe(resp)


def test_no_secret_in_request_log_or_emulator_log(fleet):
    """design §2: the request log holds no body, header or query value, and the emulator's own log never a secret
    (password, API key, JWT, refresh cookie, licence key)."""
    pbx = take(fleet)
    s = pbx.anon()
    token = expect(pbx.v3_login(s), 200, "§3.1.1")["data"]["accessToken"]
    refresh = s.cookies.get("refreshToken")
    key = fleet.control.create_company()
    expect(pbx.lic_request({"licKey": key}), 200, "§11.3")
    pbx.anon().get(pbx.url + V3 + "/auth:validateToken", params={"token": token}, timeout=30)
    secrets = {"password": pbx.password, "api key": pbx.api_key, "jwt": token, "refresh": refresh, "licence": key}
    log = json.dumps(fleet.control.requests_log(pbx.name))
    leaked = [name for name, value in secrets.items() if value and value in log]
    assert not leaked, f"secrets in the request log: {leaked}"
    text = open(fleet.fleet.log_path, encoding="utf-8", errors="replace").read()
    leaked = [name for name, value in secrets.items() if value and value in text]
    assert not leaked, f"secrets in the emulator log {fleet.fleet.log_path}: {leaked}"


def _sign_hs256(claims, secret):
    """A JWT signed like the PBX signs its own (HS256 with JWTSecret) -- test tool only."""
    import base64
    import hashlib
    import hmac

    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
    body_ = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body_}".encode(), hashlib.sha256).digest()
    return f"{head}.{body_}.{b64(sig)}"


def test_non_admin_role_is_403_not_401(fleet):
    """§3.1 step 2: a *valid* JWT whose role is not `admins` is checked against the ACL; a role the ACL does not
    know is denied with 403 "Access denied. You do not have permission to access this resource." (PBXApiResult
    shaped) -- not 401.  The token is signed with the PBX's JWTSecret taken from the control state (test tool)."""
    pbx = shared(fleet)
    secret = fleet.control.state(pbx.name)["settings"]["JWTSecret"]
    claims = jwt_payload(pbx.jwt())
    token = _sign_hs256({**claims, "role": "fidelity-operators", "userId": "operator"}, secret)
    resp = pbx.bearer(token).get(pbx.url + V3 + "/license:getLicenseInfo", timeout=30)
    data = expect(resp, 403, "§3.1 ACL denial for a non-admin role")
    assert data["result"] is False, describe(resp)
    assert data["messages"]["error"] == ["Access denied. You do not have permission to access this resource."], (
        describe(resp)
    )
    admin = _sign_hs256(claims, secret)
    expect(pbx.bearer(admin).get(pbx.url + V3 + "/system:checkAuth", timeout=30), 200, "§3.1 role admins bypasses")


def test_token_not_yet_valid_beyond_leeway_401(fleet):
    """§3.1.1: validation rejects a token whose nbf - 600 s lies in the future; within the leeway it is accepted."""
    pbx = shared(fleet)
    secret = fleet.control.state(pbx.name)["settings"]["JWTSecret"]
    claims = jwt_payload(pbx.jwt())
    early = {**claims, "nbf": claims["iat"] + 300, "exp": claims["iat"] + 1200}
    late = {**claims, "nbf": claims["iat"] + 3600, "exp": claims["iat"] + 4500}
    expect(
        pbx.bearer(_sign_hs256(early, secret)).get(pbx.url + V3 + "/system:checkAuth", timeout=30),
        200,
        "§3.1.1 nbf within the 600 s leeway",
    )
    expect(
        pbx.bearer(_sign_hs256(late, secret)).get(pbx.url + V3 + "/system:checkAuth", timeout=30),
        401,
        "§3.1.1 nbf - 600 s > now",
    )
    wrong = _sign_hs256(claims, secret + "x")
    expect(pbx.bearer(wrong).get(pbx.url + V3 + "/system:checkAuth", timeout=30), 401, "§3.1.1 bad signature")
