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
