"""MikoPBXError: classification, hints, masking."""

from __future__ import annotations

import pytest

from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError

KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"


def test_licence_code_sets_classification():
    err = MikoPBXError("x", "licence", licence_code=2009)
    assert err.classification == "licence:2009"
    assert err.is_licence_error


@pytest.mark.parametrize(
    "classification, words",
    [("tls", ("ca_path", "validate_certs")), ("auth", ("api_key", "password")), ("rate_limited", ("wait",))],
)
def test_default_hints(classification, words):
    hint = MikoPBXError("x", classification).hint
    for word in words:
        assert word in hint


def test_secrets_learnt_after_creation_are_masked():
    secrets: set[str] = set()
    err = MikoPBXError("token abcdef123 rejected", "auth", pbx_message="abcdef123", secrets=secrets)
    assert "abcdef123" in str(err)
    secrets.add("abcdef123")
    assert "abcdef123" not in str(err)
    assert "abcdef123" not in repr(err.to_dict())


def test_key_is_masked_even_when_unknown():
    err = MikoPBXError("stored %s" % KEY, "server", pbx_message=KEY.lower(), url="https://u:%s@h" % KEY)
    text = str(err) + repr(err.to_dict())
    assert "BBBBB" not in text.upper()
    assert "MIKO-*****-*****-*****-DDDDD" in text


def test_describe_has_status_pbx_message_and_fix():
    err = MikoPBXError("cause", "server", status=503, pbx_message="queue full", hint="retry")
    assert str(err) == "cause; HTTP 503; PBX said: queue full; Fix: retry"
