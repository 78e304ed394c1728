# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module needs around the client: the connection options, building the client from
the module, failing with a useful message, and masking secrets in anything returned."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.mikopbx.marketplace.plugins.module_utils.api import (
    HAS_REQUESTS,
    REQUESTS_IMPORT_ERROR,
    MikoPBXClient,
)
from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError, mask_text

CONNECTION_REQUIRED_ONE_OF: list[list[str]] = [["api_key", "username"]]
CONNECTION_REQUIRED_TOGETHER: list[list[str]] = [["username", "password"]]


def connection_argument_spec() -> dict[str, dict[str, Any]]:
    """The connection options, matching the ``mikopbx.marketplace.connection`` doc fragment."""
    return dict(
        url=dict(type="str", required=True, fallback=(env_fallback, ["MIKOPBX_URL"])),
        api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["MIKOPBX_API_KEY"])),
        username=dict(type="str", fallback=(env_fallback, ["MIKOPBX_USERNAME"])),
        password=dict(type="str", no_log=True, fallback=(env_fallback, ["MIKOPBX_PASSWORD"])),
        validate_certs=dict(type="bool", default=True, fallback=(env_fallback, ["MIKOPBX_VALIDATE_CERTS"])),
        ca_path=dict(type="path", fallback=(env_fallback, ["MIKOPBX_CA_PATH"])),
        timeout=dict(type="int", default=40, fallback=(env_fallback, ["MIKOPBX_TIMEOUT"])),
        api_generation=dict(
            type="str",
            default="auto",
            choices=["auto", "v3", "legacy"],
            fallback=(env_fallback, ["MIKOPBX_API_GENERATION"]),
        ),
        retries=dict(type="int", default=3, fallback=(env_fallback, ["MIKOPBX_RETRIES"])),
    )


def connection_module_kwargs() -> dict[str, Any]:
    """``required_one_of``/``required_together`` for ``AnsibleModule(**...)`` (copies, so callers may extend)."""
    return dict(
        required_one_of=[list(x) for x in CONNECTION_REQUIRED_ONE_OF],
        required_together=[list(x) for x in CONNECTION_REQUIRED_TOGETHER],
    )


def client_from_module(module: Any) -> MikoPBXClient:
    """Build the client from the module's connection options.

    Fails the module when ``requests`` is missing or the options are unusable. Every secret the
    client learns (tokens, cookies, licence keys) is added to ``module.no_log_values`` at once, so
    Ansible masks it in anything the module returns or logs.
    """
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)

    params = module.params
    for name in ("api_key", "password"):
        if params.get(name):
            module.no_log_values.add(params[name])
    try:
        client = MikoPBXClient(
            params["url"],
            api_key=params.get("api_key"),
            username=params.get("username"),
            password=params.get("password"),
            validate_certs=params.get("validate_certs", True),
            ca_path=params.get("ca_path"),
            timeout=params.get("timeout") or 40,
            retries=params.get("retries") if params.get("retries") is not None else 3,
            generation=params.get("api_generation") or "auto",
        )
    except MikoPBXError as err:
        fail_from_error(module, err, "connect to the PBX")

    client.secret_listeners.append(module.no_log_values.add)
    for secret in client.secrets:
        module.no_log_values.add(secret)
    return client


def _module_secrets(module: Any, client: MikoPBXClient | None) -> set[str]:
    secrets = set(getattr(module, "no_log_values", set()) or set())
    if client is not None:
        secrets |= client.secrets
    return {str(s) for s in secrets if s}


def fail_from_error(
    module: Any, err: MikoPBXError, action: str, client: MikoPBXClient | None = None, **extra: Any
) -> NoReturn:
    """``fail_json`` with a message naming the PBX, the action, the cause, HTTP status, the PBX's
    own message and the fix, plus ``error`` = the classified error (all masked)."""
    secrets = _module_secrets(module, client)
    err.attach_secrets(secrets | set(getattr(err, "_secrets", None) or ()))
    url = err.url or module.params.get("url") or "the PBX"
    msg = "MikoPBX %s: failed to %s: %s" % (url, action, err.describe())
    module.fail_json(
        msg=mask_text(msg, secrets),
        error=mask_secrets(err.to_dict(), secrets),
        **mask_secrets(extra, secrets),
    )
    raise AssertionError("fail_json returned")  # pragma: no cover - fail_json exits


def mask_secrets(value: Any, secrets: Iterable[str]) -> Any:
    """A copy of ``value`` (str, list, tuple, dict, nested) with every secret and key-like string masked."""
    secrets = [s for s in secrets if s]
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, Mapping):
        return {k: mask_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        masked = [mask_secrets(v, secrets) for v in value]
        return type(value)(masked) if not isinstance(value, set) else masked
    return value
