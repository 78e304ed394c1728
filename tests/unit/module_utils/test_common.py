"""Connection options, the doc fragment, client_from_module, fail_from_error and masking."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from ansible_collections.mikopbx.marketplace.plugins.doc_fragments.connection import ModuleDocFragment
from ansible_collections.mikopbx.marketplace.plugins.module_utils import common
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError, mask_text

KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"
API_KEY = "b2" * 32
PASSWORD = "Sup3r-S3cret"
ENV_NAMES = {
    "url": "MIKOPBX_URL",
    "api_key": "MIKOPBX_API_KEY",
    "username": "MIKOPBX_USERNAME",
    "password": "MIKOPBX_PASSWORD",
    "validate_certs": "MIKOPBX_VALIDATE_CERTS",
    "ca_path": "MIKOPBX_CA_PATH",
    "timeout": "MIKOPBX_TIMEOUT",
    "api_generation": "MIKOPBX_API_GENERATION",
    "retries": "MIKOPBX_RETRIES",
}


def make_module(args: dict[str, Any], **kwargs: Any) -> AnsibleModule:
    with patch_module_args(args):
        return AnsibleModule(
            argument_spec=common.connection_argument_spec(),
            supports_check_mode=True,
            **common.connection_module_kwargs(),
            **kwargs,
        )


def test_doc_fragment_agrees_with_argument_spec():
    doc = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    spec = common.connection_argument_spec()
    assert set(doc) == set(spec)
    for name, option in spec.items():
        documented = doc[name]
        assert documented["type"] == option["type"], name
        assert documented.get("default") == option.get("default"), name
        assert documented.get("required", False) == option.get("required", False), name
        assert documented.get("choices") == option.get("choices"), name
        env = option["fallback"][1][0]
        assert env == ENV_NAMES[name]
        assert env in " ".join(documented["description"]), name


@pytest.mark.parametrize("name", ["api_key", "password"])
def test_secret_options_are_no_log(name):
    assert common.connection_argument_spec()[name]["no_log"] is True


def test_env_fallbacks_fill_the_options(monkeypatch):
    monkeypatch.setenv("MIKOPBX_URL", "https://pbx.example.net")
    monkeypatch.setenv("MIKOPBX_API_KEY", API_KEY)
    monkeypatch.setenv("MIKOPBX_VALIDATE_CERTS", "false")
    monkeypatch.setenv("MIKOPBX_RETRIES", "5")
    module = make_module({})
    assert module.params["url"] == "https://pbx.example.net"
    assert module.params["validate_certs"] is False
    assert module.params["retries"] == 5
    assert API_KEY in module.no_log_values
    client = common.client_from_module(module)
    assert client.generation == "v3" and client.retries == 5 and client.verify is False


def run_failing(capsys, func) -> dict[str, Any]:
    with pytest.raises(SystemExit):
        func()
    return json.loads(capsys.readouterr().out)


def test_credentials_are_required(capsys):
    def build():
        make_module({"url": "https://pbx.example.net"})

    result = run_failing(capsys, build)
    assert result["failed"] and "api_key" in result["msg"]


def test_username_needs_password(capsys):
    result = run_failing(capsys, lambda: make_module({"url": "https://pbx.example.net", "username": "admin"}))
    assert result["failed"] and "password" in result["msg"]


def test_client_learns_secrets_into_no_log_values():
    module = make_module({"url": "https://pbx.example.net", "username": "admin", "password": PASSWORD})
    client = common.client_from_module(module)
    assert PASSWORD in module.no_log_values
    client.add_secret("jwt.token.value")
    assert "jwt.token.value" in module.no_log_values


def test_fail_from_error_names_pbx_action_cause_status_and_fix(capsys):
    args = {"url": "https://pbx.example.net", "api_key": API_KEY}
    module = make_module(args)
    err = MikoPBXError(
        "license.getLicenseInfo: licence error 2008",
        "licence",
        licence_code=2008,
        status=422,
        method="GET",
        path="/pbxcore/api/v3/license:getLicenseInfo",
        pbx_message="2008: capture failed for %s" % KEY,
        url="https://pbx.example.net",
        hint="free a seat in the licence cabinet",
    )
    with patch_module_args(args):
        result = run_failing(capsys, lambda: common.fail_from_error(module, err, "read the licence", seats=[KEY]))
    msg = result["msg"]
    for part in (
        "https://pbx.example.net",
        "read the licence",
        "licence error 2008",
        "HTTP 422",
        "capture failed",
        "licence cabinet",
    ):
        assert part in msg
    assert result["error"]["classification"] == "licence:2008"
    assert result["error"]["licence_code"] == 2008
    assert result["error"]["status"] == 422
    out = json.dumps(result)
    assert KEY not in out and API_KEY not in out
    assert result["seats"] == ["MIKO-*****-*****-*****-DDDDD"]


def test_fail_from_error_masks_secrets_learnt_by_the_client(capsys):
    args = {"url": "https://pbx.example.net", "username": "admin", "password": PASSWORD}
    module = make_module(args)
    client = common.client_from_module(module)
    client.add_secret("refresh-cookie-value-123")
    err = MikoPBXError("login failed for refresh-cookie-value-123 / %s" % PASSWORD, "auth")
    with patch_module_args(args):
        result = run_failing(capsys, lambda: common.fail_from_error(module, err, "log in", client))
    out = json.dumps(result)
    assert "refresh-cookie-value-123" not in out and PASSWORD not in out


def test_mask_secrets_walks_structures():
    value = {"a": [KEY, ("x", "tok-123456")], "b": {"c": "Bearer abc.def.ghi"}, "n": 3, "none": None}
    masked = common.mask_secrets(value, {"tok-123456"})
    assert masked == {
        "a": ["MIKO-*****-*****-*****-DDDDD", ("x", "********")],
        "b": {"c": "Bearer ********"},
        "n": 3,
        "none": None,
    }


def test_mask_text_cookies_and_coupons():
    text = "Cookie: PHPSESSID=abc123; refreshToken=zzz; coupon MIKOUPD-AAAAA-BBBBB-CCCCC-EEEEE"
    masked = mask_text(text)
    assert "abc123" not in masked and "zzz" not in masked
    assert "MIKOUPD-*****-*****-*****-EEEEE" in masked


# ------------------------------------------------------------------ local checks of the connection options


def checked(capsys, args: dict[str, Any]) -> dict[str, Any]:
    """Run check_connection_options through client_from_module and return the failure."""
    module = make_module(args)
    with patch_module_args(args):
        return run_failing(capsys, lambda: common.client_from_module(module))


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:%s@pbx.example.net:8443/" % PASSWORD,
        "admin:%s@pbx.example.net" % PASSWORD,
        "https://admin:Sup3r%%2FS3cret@pbx.example.net",
        "https://admin:Sup3r/S3cret@pbx.example.net/",
        "https://admin@pbx.example.net",
    ],
    ids=["https", "no-scheme", "percent-encoded", "slash-in-password", "user-only"],
)
def test_url_with_a_password_is_refused_without_showing_it(fake_http, capsys, url):
    result = checked(capsys, {"url": url, "username": "admin", "password": "other-password"})

    out = json.dumps(result)
    assert result["failed"] and fake_http.requests == []
    assert "Sup3r" not in out and "S3cret" not in out
    assert "user name or password" in result["msg"] and "username and password options" in result["msg"]
    assert "pbx.example.net" in result["msg"]
    assert result["error"]["classification"] == "invalid_input"
    assert "Sup3r" not in result["invocation"]["module_args"]["url"]


@pytest.mark.parametrize(
    "args, problem, fix",
    [
        ({"url": ""}, "url is empty", "MIKOPBX_URL"),
        ({"url": "   "}, "url is empty", "base URL"),
        ({"url": "ftp://pbx.example.net"}, "scheme 'ftp'", "https://"),
        ({"url": "https://pbx.example.net/admin-cabinet/"}, "path '/admin-cabinet/'", "https://pbx.example.net"),
        ({"url": "https://pbx.example.net?x=1"}, "query string", "base URL"),
        ({"url": "https://pbx.example.net:99999"}, "invalid port", "base URL"),
        ({"url": "https://"}, "no host name", "base URL"),
        ({"timeout": 0}, "timeout is 0", "positive number of seconds"),
        ({"retries": -1}, "retries is -1", "cannot be negative"),
        ({"ca_path": "/nonexistent/pbx-ca.pem"}, "ca_path /nonexistent/pbx-ca.pem does not exist", "controller"),
    ],
    ids=["empty", "blank", "scheme", "path", "query", "port", "no-host", "timeout", "retries", "ca_path"],
)
def test_unusable_connection_options_fail_before_any_request(fake_http, capsys, args, problem, fix):
    full = {"url": "https://pbx.example.net", "api_key": API_KEY}
    full.update(args)

    result = checked(capsys, full)

    assert result["failed"] and fake_http.requests == []
    assert problem in result["msg"] and fix in result["msg"]
    assert "nothing was sent to the PBX" in result["msg"]
    assert not result["msg"].startswith("MikoPBX the PBX")
    assert result["error"]["classification"] == "invalid_input"
    assert API_KEY not in json.dumps(result)


def test_empty_password_is_named(fake_http, capsys):
    result = checked(capsys, {"url": "https://pbx.example.net", "username": "admin", "password": ""})

    assert "password is empty for username 'admin'" in result["msg"]
    assert "no credentials" not in result["msg"] and fake_http.requests == []


@pytest.mark.parametrize(
    "url", ["https://pbx.example.net", "https://pbx.example.net:8443/", "pbx.example.net", "http://192.0.2.10"]
)
def test_base_urls_are_accepted(url, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    module = make_module({"url": url, "api_key": API_KEY, "ca_path": str(ca), "timeout": 1, "retries": 0})
    client = common.client_from_module(module)
    assert client.verify == str(ca) and client.retries == 0


def test_closed_connection_on_plain_http_suggests_https(capsys):
    args = {"url": "http://pbx.example.net", "api_key": API_KEY}
    module = make_module(args)
    err = MikoPBXError(
        "cannot connect to the PBX: Remote end closed connection without response",
        "unreachable",
        method="POST",
        path="/pbxcore/api/v3/system:executeSqlRequest",
        url="http://pbx.example.net",
    )
    with patch_module_args(args):
        result = run_failing(capsys, lambda: common.fail_from_error(module, err, "read the licence"))
    assert "use https:// in url" in result["msg"] and "https://" in result["error"]["hint"]


def test_api_key_on_a_pbx_without_v3_says_api_keys_need_2026(capsys):
    args = {"url": "https://pbx.example.net", "api_key": API_KEY}
    module = make_module(args)
    err = MikoPBXError(
        "system.executeSqlRequest: the PBX has no such endpoint",
        "not_found",
        status=404,
        method="POST",
        path="/pbxcore/api/v3/system:executeSqlRequest",
        url="https://pbx.example.net",
    )
    with patch_module_args(args):
        result = run_failing(capsys, lambda: common.fail_from_error(module, err, "read the installed modules"))
    assert "API keys need MikoPBX 2026.1" in result["msg"] and "username and password" in result["msg"]
    assert API_KEY not in json.dumps(result)


def test_other_errors_get_no_option_hint(capsys):
    args = {"url": "https://pbx.example.net", "username": "admin", "password": PASSWORD}
    module = make_module(args)
    err = MikoPBXError("the PBX has no such endpoint", "not_found", path="/pbxcore/api/v3/x", url=args["url"])
    with patch_module_args(args):
        result = run_failing(capsys, lambda: common.fail_from_error(module, err, "read"))
    assert "2026.1" not in result["msg"] and "use https://" not in result["msg"]


def test_remembered_login_refusal_says_no_request_was_sent(fake_http, capsys):
    from mikopbx_fakes import Reply, v3_fail

    login = "/pbxcore/api/v3/auth:login"
    refused = Reply(401, json=v3_fail({"error": ["Invalid login or password"]}, "login", 401))
    fake_http.add("POST", login, refused)
    args = {"url": "https://pbx.example.net", "username": "admin", "password": PASSWORD}
    first = common.client_from_module(make_module(args))
    with pytest.raises(MikoPBXError):
        first.call("license.ping")

    module = make_module(args)  # the next task of the play, same credentials
    client = common.client_from_module(module)
    with pytest.raises(MikoPBXError) as info:
        client.call("license.ping")
    with patch_module_args(args):
        result = run_failing(capsys, lambda: common.fail_from_error(module, info.value, "ping", client=client))

    assert fake_http.count("POST", login) == 1
    assert "no request sent" in result["msg"] and "with HTTP 401" in result["msg"]
    assert "; HTTP " not in result["msg"]  # no status of this (unsent) attempt
    assert result["error"]["method"] is None and result["error"]["status"] is None
    assert PASSWORD not in json.dumps(result)
