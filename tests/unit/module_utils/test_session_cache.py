"""Login sessions reused across clients (api.SessionCache): one login per PBX for a play of tasks."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import pytest
from mikopbx_fakes import LEGACY, PBX_URL, V3, Reply, legacy_fail, legacy_ok, v3_fail, v3_ok

from ansible_collections.mikopbx.marketplace.plugins.module_utils import api
from ansible_collections.mikopbx.marketplace.plugins.module_utils.api import (
    LEGACY_LOGIN_PATH,
    LEGACY_MODULES_PAGE,
    MikoPBXClient,
    SessionCache,
)
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError

PASSWORD = "Pa55-w0rd!"
API_KEY = "a1" * 32
SESSION1 = "s3ss10n1d0000000000000000a"
SESSION2 = "s3ss10n1d0000000000000000b"
REFRESH = "f" * 64
LOGIN = V3 + "auth:login"
REFRESH_PATH = V3 + "auth:refresh"
PING_V3 = V3 + "license:ping"
PING_LEGACY = LEGACY + "license/ping"
UNAUTHENTICATED = {"jsonapi": {"version": "1.0"}, "errors": ["The user isn't authenticated."]}


def jwt(exp: float | None, tag: str = "1") -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"userId": "admin", "role": "admins"}
    if exp is not None:
        claims["exp"] = int(exp)
    return "%s.%s.%s" % (part({"typ": "JWT", "alg": "HS256"}), part(claims), "c2ln" + tag)


def v3_login_ok(token: str) -> Reply:
    body = v3_ok({"accessToken": token, "tokenType": "Bearer", "expiresIn": 900, "login": "admin"}, "login")
    return Reply(json=body, cookies={"refreshToken": REFRESH})


def v3_refresh_ok(token: str) -> Reply:
    return Reply(json=v3_ok({"accessToken": token, "tokenType": "Bearer", "expiresIn": 900}, "refresh"))


def legacy_login_ok(session: str = SESSION1) -> Reply:
    return Reply(
        json={"success": True, "reload": "/admin-cabinet/extensions/index", "message": []},
        cookies={"PHPSESSID": session},
    )


def client(**kwargs) -> MikoPBXClient:
    kwargs.setdefault("sleep", lambda seconds: None)
    if "api_key" not in kwargs:
        kwargs.setdefault("username", "admin")
        kwargs.setdefault("password", PASSWORD)
    return MikoPBXClient(PBX_URL, **kwargs)


def cache_files(tmp_path) -> list:
    directory = tmp_path / "login-memo" / "sessions"  # the unit conftest isolates the login memo here
    return sorted(directory.iterdir()) if directory.exists() else []


def stored(tmp_path) -> dict:
    (path,) = cache_files(tmp_path)
    return json.loads(path.read_text())


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    now = time.time() + seconds
    monkeypatch.setattr(api.time, "time", lambda: now)


@pytest.fixture
def legacy_pbx(fake_http):
    fake_http.add("POST", LOGIN, Reply(404, json={"success": False, "messages": {"error": ["not found"]}}))
    fake_http.add("POST", LEGACY_LOGIN_PATH, legacy_login_ok())
    fake_http.add("GET", PING_LEGACY, Reply(json=legacy_ok([], "ping")))
    return fake_http


# ------------------------------------------------------------------ reuse


def test_legacy_two_clients_log_in_once_and_skip_the_v3_probe(legacy_pbx, tmp_path):
    client().call("license.ping")
    second = client()
    second.call("license.ping")

    assert legacy_pbx.paths() == [LOGIN, LEGACY_LOGIN_PATH, PING_LEGACY, PING_LEGACY]
    assert "PHPSESSID=" + SESSION1 in legacy_pbx.requests[-1].headers["Cookie"]
    assert second.generation == "legacy"
    assert stored(tmp_path)["generation"] == "legacy"


def test_v3_two_clients_log_in_once(fake_http, tmp_path):
    token = jwt(time.time() + 900)
    fake_http.add("POST", LOGIN, v3_login_ok(token))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))

    for _task in range(3):
        client().call("license.ping")

    assert fake_http.paths() == [LOGIN, PING_V3, PING_V3, PING_V3]
    assert all(r.headers["Authorization"] == "Bearer " + token for r in fake_http.requests[1:])
    entry = stored(tmp_path)
    assert entry["access_token"] == token and entry["cookies"]["refreshToken"]["value"] == REFRESH
    assert entry["access_until"] <= time.time() + 900 - SessionCache.V3_MARGIN + 1


def test_cached_values_are_registered_as_secrets(fake_http):
    token = jwt(time.time() + 900)
    fake_http.add("POST", LOGIN, v3_login_ok(token))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))
    client().call("license.ping")

    second = client()
    heard: list[str] = []
    second.secret_listeners.append(heard.append)  # as common.client_from_module does
    second.call("license.ping")

    assert {token, REFRESH} <= second.secrets
    assert {token, REFRESH} <= set(heard)
    assert len(fake_http.paths()) == 3


# ------------------------------------------------------------------ a stored session that no longer works


@pytest.mark.parametrize(
    "rejection",
    [Reply(401, json=UNAUTHENTICATED), Reply(403, text="This user is not authorized")],
    ids=["rest-401", "admin-403"],
)
def test_rejected_legacy_session_leads_to_exactly_one_new_login(legacy_pbx, tmp_path, rejection):
    client(generation="legacy").call("license.ping")
    legacy_pbx.set("POST", LEGACY_LOGIN_PATH, legacy_login_ok(SESSION2))
    legacy_pbx.set("GET", PING_LEGACY, rejection, Reply(json=legacy_ok([], "ping")))

    second = client(generation="legacy")
    second.call("license.ping")

    assert legacy_pbx.paths() == [LEGACY_LOGIN_PATH, PING_LEGACY, PING_LEGACY, LEGACY_LOGIN_PATH, PING_LEGACY]
    assert "PHPSESSID=" + SESSION1 not in legacy_pbx.requests[3].headers.get("Cookie", "")
    assert legacy_pbx.requests[-1].headers["Cookie"] == "PHPSESSID=" + SESSION2
    assert stored(tmp_path)["cookies"]["PHPSESSID"]["value"] == SESSION2
    assert second._login_failure is None


def test_rejected_session_on_the_admin_page_leads_to_one_new_login(legacy_pbx, tmp_path):
    page = "<script>var globalPBXLicense = ''; var globalPBXVersion = '2024.1.114';</script>"
    client(generation="legacy").call("license.ping")
    legacy_pbx.set("POST", LEGACY_LOGIN_PATH, legacy_login_ok(SESSION2))
    legacy_pbx.add(
        "GET", LEGACY_MODULES_PAGE, Reply(302, headers={"Location": "/admin-cabinet/session/index"}), Reply(text=page)
    )

    assert client(generation="legacy").settings()["PBXVersion"] == "2024.1.114"
    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 2
    assert stored(tmp_path)["cookies"]["PHPSESSID"]["value"] == SESSION2


def test_refused_login_after_a_rejected_session_is_remembered(legacy_pbx, tmp_path):
    client(generation="legacy").call("license.ping")
    legacy_pbx.set("POST", LEGACY_LOGIN_PATH, Reply(json=legacy_fail({"error": ["Wrong password, 4 attempts left"]})))
    legacy_pbx.set("GET", PING_LEGACY, Reply(401, json=UNAUTHENTICATED))

    with pytest.raises(MikoPBXError) as info:
        client(generation="legacy").call("license.ping")
    assert info.value.classification == "auth"
    assert cache_files(tmp_path) == []

    # The next task: the login memo stops it before anything is sent.
    before = len(legacy_pbx.requests)
    with pytest.raises(MikoPBXError, match="not attempted"):
        client(generation="legacy").call("license.ping")
    assert len(legacy_pbx.requests) == before


def test_legacy_session_is_not_reused_near_the_end_of_its_lifetime(legacy_pbx, monkeypatch):
    client(generation="legacy").call("license.ping")
    later(monkeypatch, SessionCache.LEGACY_TTL + 1)

    client(generation="legacy").call("license.ping")

    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 2
    assert legacy_pbx.count("GET", PING_LEGACY) == 2  # no request was spent on the old session


def test_expired_v3_token_is_refreshed_with_the_stored_cookie(fake_http, tmp_path, monkeypatch):
    first_token, second_token = jwt(time.time() + 900, "1"), jwt(time.time() + 2000, "2")
    fake_http.add("POST", LOGIN, v3_login_ok(first_token))
    fake_http.add("POST", REFRESH_PATH, v3_refresh_ok(second_token))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))
    client().call("license.ping")
    later(monkeypatch, 900)

    second = client()
    second.call("license.ping")

    assert fake_http.paths() == [LOGIN, PING_V3, REFRESH_PATH, PING_V3]
    assert "refreshToken=" + REFRESH in fake_http.requests[2].headers["Cookie"]
    assert fake_http.requests[3].headers["Authorization"] == "Bearer " + second_token
    assert stored(tmp_path)["access_token"] == second_token
    assert {second_token, REFRESH} <= second.secrets


def test_refused_refresh_of_a_stored_token_leads_to_one_login(fake_http, monkeypatch):
    fake_http.add("POST", LOGIN, v3_login_ok(jwt(time.time() + 900, "1")), v3_login_ok(jwt(time.time() + 2000, "2")))
    fake_http.add("POST", REFRESH_PATH, Reply(401, json=v3_fail({"error": ["auth_RefreshTokenExpired"]}, "", 401)))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))
    client().call("license.ping")
    later(monkeypatch, 900)

    client().call("license.ping")

    assert fake_http.paths() == [LOGIN, PING_V3, REFRESH_PATH, LOGIN, PING_V3]


def test_rejected_v3_token_is_renewed_by_refresh(fake_http, tmp_path):
    renewed = jwt(time.time() + 900, "2")
    fake_http.add("POST", LOGIN, v3_login_ok(jwt(time.time() + 900, "1")))
    fake_http.add("POST", REFRESH_PATH, v3_refresh_ok(renewed))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))
    client().call("license.ping")
    fake_http.set(
        "GET",
        PING_V3,
        Reply(401, json=v3_fail({"error": ["The user isn't authenticated."]})),
        Reply(json=v3_ok([], "ping")),
    )

    client().call("license.ping")

    assert fake_http.paths() == [LOGIN, PING_V3, PING_V3, REFRESH_PATH, PING_V3]
    assert stored(tmp_path)["access_token"] == renewed
    assert fake_http.count("POST", LOGIN) == 1  # a refused stored token is not a login


# ------------------------------------------------------------------ switches, storage, robustness


def test_cache_switched_off_logs_in_every_time(legacy_pbx, monkeypatch, tmp_path):
    monkeypatch.setenv("MIKOPBX_SESSION_CACHE", "0")
    for _task in range(3):
        client(generation="legacy").call("license.ping")
    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 3
    assert cache_files(tmp_path) == []


def test_cache_directory_can_be_moved(legacy_pbx, monkeypatch, tmp_path):
    monkeypatch.setenv("MIKOPBX_SESSION_CACHE_DIR", str(tmp_path / "elsewhere"))
    client(generation="legacy").call("license.ping")
    client(generation="legacy").call("license.ping")
    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 1
    assert len(list((tmp_path / "elsewhere").iterdir())) == 1


def test_file_is_private_and_named_without_secrets(fake_http, tmp_path):
    token = jwt(time.time() + 900)
    fake_http.add("POST", LOGIN, v3_login_ok(token))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))
    client().call("license.ping")

    (path,) = cache_files(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    for value in (PASSWORD, token, REFRESH, "admin"):
        assert value not in path.name
    assert PASSWORD not in path.read_text()
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_another_password_does_not_use_the_session(legacy_pbx, tmp_path):
    client(generation="legacy").call("license.ping")
    client(generation="legacy", password="another-password").call("license.ping")
    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 2
    assert len(cache_files(tmp_path)) == 2


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 1}', "", "\x00\xff"])
def test_corrupt_file_is_ignored_and_replaced(legacy_pbx, tmp_path, content):
    client(generation="legacy").call("license.ping")
    (path,) = cache_files(tmp_path)
    path.write_text(content)

    client(generation="legacy").call("license.ping")

    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 2
    assert stored(tmp_path)["generation"] == "legacy"


def test_entry_with_wrong_types_is_ignored(legacy_pbx, tmp_path):
    client(generation="legacy").call("license.ping")
    (path,) = cache_files(tmp_path)
    entry = json.loads(path.read_text())
    entry["ts"] = "yesterday"
    path.write_text(json.dumps(entry))

    client(generation="legacy").call("license.ping")
    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 2


def test_readable_by_others_or_foreign_file_is_ignored(legacy_pbx, tmp_path, monkeypatch):
    client(generation="legacy").call("license.ping")
    (path,) = cache_files(tmp_path)
    os.chmod(path, 0o644)
    client(generation="legacy").call("license.ping")
    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 2

    # Someone else's file (another uid): not trusted, and not overwritten either when the directory is theirs.
    monkeypatch.setattr(api.os, "getuid", lambda: os.geteuid() + 4242, raising=False)
    client(generation="legacy").call("license.ping")
    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 3


def test_unwritable_directory_never_breaks_the_module(legacy_pbx, tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("MIKOPBX_SESSION_CACHE_DIR", str(blocker / "sessions"))
    client(generation="legacy").call("license.ping")
    client(generation="legacy").call("license.ping")
    assert legacy_pbx.count("POST", LEGACY_LOGIN_PATH) == 2


def test_explicit_generation_ignores_an_entry_of_the_other(legacy_pbx, fake_http, tmp_path):
    client(generation="legacy").call("license.ping")
    fake_http.set("POST", LOGIN, v3_login_ok(jwt(time.time() + 900)))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))

    client(generation="v3").call("license.ping")

    assert fake_http.count("POST", LOGIN) == 1
    assert stored(tmp_path)["generation"] == "v3"


def test_logout_drops_the_stored_session(fake_http, tmp_path):
    fake_http.add("POST", LOGIN, v3_login_ok(jwt(time.time() + 900)))
    fake_http.add("POST", V3 + "auth:logout", Reply(json=v3_ok({"message": "Successfully logged out"})))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))
    first = client()
    first.call("license.ping")
    first.logout()
    assert cache_files(tmp_path) == []

    client().call("license.ping")
    assert fake_http.count("POST", LOGIN) == 2


def test_api_key_is_never_cached(fake_http, tmp_path):
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))
    client(api_key=API_KEY).call("license.ping")
    assert cache_files(tmp_path) == []


def test_token_without_expiry_uses_expires_in(fake_http, tmp_path):
    fake_http.add("POST", LOGIN, v3_login_ok(jwt(None)))
    fake_http.add("GET", PING_V3, Reply(json=v3_ok([], "ping")))
    client().call("license.ping")
    until = stored(tmp_path)["access_until"]
    assert time.time() + 900 - SessionCache.V3_MARGIN - 5 < until <= time.time() + 900 - SessionCache.V3_MARGIN
