# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module needs around the client: the connection options, building the client from
the module, failing with a useful message, and masking secrets in anything returned."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

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

    check_connection_options(module)
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


class ConnectionOptionError(ValueError):
    """A connection option that cannot work; found locally, before any request."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def check_connection_options(module: Any) -> None:
    """Fail the module when a connection option cannot work, before anything is sent to the PBX.

    Call it right after ``AnsibleModule(...)`` (``client_from_module`` calls it too): a password
    written into ``url`` is registered in ``module.no_log_values`` here, so that no later message,
    including Ansible's echo of the module arguments, shows it.
    """
    params = module.params
    url = params.get("url")
    credentials = url_credentials(url)
    if len(credentials) > 1:  # user:password@ - mask it in every output of this run, the argument echo too
        for secret in credentials:
            module.no_log_values.add(secret)
    try:
        validate_url(url)
        validate_transport_options(params)
        validate_credentials(params)
    except ConnectionOptionError as err:
        where = safe_url(url) or "(no url)"
        module.fail_json(
            msg="MikoPBX %s: invalid connection options: %s; Fix: %s (nothing was sent to the PBX)"
            % (where, err.problem, err.fix),
            changed=False,
            error=dict(
                classification="invalid_input",
                message=err.problem,
                hint=err.fix,
                status=None,
                licence_code=None,
                pbx_message=None,
                method=None,
                path=None,
                url=safe_url(url),
            ),
        )


def url_credentials(url: Any) -> list[str]:
    """The user information written into ``url``: ``[user]`` for ``user@``; for ``user:password@`` the whole
    user information and the password, each as written and percent-decoded. ``[]`` without any."""
    text = str(url or "").strip()
    authority = text.split("://", 1)[1] if "://" in text else text
    if "@" not in authority:
        return []
    userinfo = authority.rsplit("@", 1)[0]
    if ":" not in userinfo:
        return [userinfo]  # a user name alone: refused, but nothing secret to mask
    parts = [userinfo, userinfo.split(":", 1)[1]]
    found = []
    for part in parts:
        for value in (part, unquote(part)):
            if value and value not in found:
                found.append(value)
    return found


def safe_url(url: Any) -> str | None:
    """``scheme://host[:port]`` of ``url`` without user information, path or query; None when unusable."""
    text = str(url or "").strip()
    if not text:
        return None
    if "://" not in text:
        text = "https://" + text
    scheme, rest = text.split("://", 1)
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in rest:
        authority = rest.rsplit("@", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not authority:
        return None
    return "%s://%s" % (scheme.lower(), authority)


def validate_url(url: Any) -> str:
    """The PBX base URL (``scheme://host[:port]``); raises :class:`ConnectionOptionError`.

    A URL without a scheme is taken as ``https://``, as the client does. Nothing of the given value
    that could be a secret (user information, query) is repeated in a message.
    """
    example = "https://pbx.example.net or https://192.0.2.10:8443"
    text = str(url or "").strip()
    if not text:
        raise ConnectionOptionError(
            "url is empty", "set url (or MIKOPBX_URL) to the base URL of the PBX web interface, e.g. %s" % example
        )
    if url_credentials(text):
        raise ConnectionOptionError(
            "url contains a user name or password (user:password@host); credentials in the URL are not used and "
            "would be shown in logs",
            "remove them from url and give them as the username and password options (or use api_key)",
        )
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ConnectionOptionError(
            "url has the scheme %r, which is not supported" % scheme[:20],
            "start url with https:// (MikoPBX serves its web interface and API over HTTPS), e.g. %s" % example,
        )
    if not parts.hostname:
        raise ConnectionOptionError("url has no host name", "give the PBX base URL, e.g. %s" % example)
    try:
        port = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ConnectionOptionError(
            "url has an invalid port (it must be a number from 1 to 65535)", "give the PBX base URL, e.g. %s" % example
        )
    if parts.query or parts.fragment:
        raise ConnectionOptionError(
            "url has a query string or fragment (?... or #...)",
            "give only the PBX base URL, e.g. %s" % example,
        )
    if parts.path not in ("", "/"):
        raise ConnectionOptionError(
            "url has the path %r; the modules need the base URL of the PBX, not a page of it" % parts.path[:60],
            "remove the path and give the PBX base URL, e.g. %s://%s" % (scheme, parts.netloc),
        )
    return "%s://%s" % (scheme, parts.netloc)


def validate_transport_options(params: Mapping[str, Any]) -> None:
    """``timeout``, ``retries`` and ``ca_path``; raises :class:`ConnectionOptionError`."""
    timeout = params.get("timeout")
    if timeout is not None and timeout < 1:
        raise ConnectionOptionError(
            "timeout is %s; it is the number of seconds to wait for each answer of the PBX and must be at least 1"
            % timeout,
            "set timeout to a positive number of seconds, or leave it out (default 40)",
        )
    retries = params.get("retries")
    if retries is not None and retries < 0:
        raise ConnectionOptionError(
            "retries is %s; it counts repeated attempts and cannot be negative" % retries,
            "set retries to 0 (never repeat) or more, or leave it out (default 3)",
        )
    ca_path = params.get("ca_path")
    if ca_path is not None:
        if not str(ca_path).strip():
            raise ConnectionOptionError(
                "ca_path is empty", "give the CA bundle or certificate file of the PBX, or leave ca_path out"
            )
        if not os.path.exists(ca_path):
            raise ConnectionOptionError(
                "ca_path %s does not exist on the controller" % ca_path,
                "give the path of an existing CA bundle or certificate file (or a directory of CA certificates) "
                "on the Ansible controller, where the modules run",
            )
        if not os.access(ca_path, os.R_OK):
            raise ConnectionOptionError(
                "ca_path %s cannot be read by the user running Ansible" % ca_path,
                "make the file readable for that user, or copy it somewhere readable",
            )


def validate_credentials(params: Mapping[str, Any]) -> None:
    """Empty credentials given explicitly; raises :class:`ConnectionOptionError`."""
    api_key = params.get("api_key")
    username = params.get("username")
    password = params.get("password")
    if api_key is not None and not str(api_key).strip() and not username:
        raise ConnectionOptionError(
            "api_key is empty",
            "give the PBX's REST API key in api_key (or MIKOPBX_API_KEY), or use username and password",
        )
    if api_key:
        return
    if username is not None and not str(username).strip():
        raise ConnectionOptionError(
            "username is empty", "give the web administrator login in username (or MIKOPBX_USERNAME), or use api_key"
        )
    if username and password is not None and password == "":
        raise ConnectionOptionError(
            "password is empty for username %r" % username,
            "give the password of that user in password (or MIKOPBX_PASSWORD); check that the variable it comes "
            "from is set",
        )


def _module_secrets(module: Any, client: MikoPBXClient | None) -> set[str]:
    secrets = set(getattr(module, "no_log_values", set()) or set())
    if client is not None:
        secrets |= client.secrets
    return {str(s) for s in secrets if s}


def error_result(module: Any, err: MikoPBXError, action: str, client: MikoPBXClient | None = None) -> dict[str, Any]:
    """``msg`` naming the PBX, the action, the cause, HTTP status, the PBX's own message and the fix,
    plus ``error`` = the classified error, all masked: what a failed task returns."""
    secrets = _module_secrets(module, client)
    err.attach_secrets(secrets | set(getattr(err, "_secrets", None) or ()))
    _add_option_hints(module, err)
    url = err.url or safe_url(module.params.get("url")) or "the PBX"
    msg = "MikoPBX %s: failed to %s: %s" % (url, action, err.describe())
    return {"msg": mask_text(msg, secrets), "error": mask_secrets(err.to_dict(), secrets)}


def fail_from_error(
    module: Any, err: MikoPBXError, action: str, client: MikoPBXClient | None = None, **extra: Any
) -> NoReturn:
    """``fail_json`` with the result of :func:`error_result` and ``extra`` (masked)."""
    result = error_result(module, err, action, client)
    module.fail_json(**result, **mask_secrets(extra, _module_secrets(module, client)))
    raise AssertionError("fail_json returned")  # pragma: no cover - fail_json exits


def _add_option_hints(module: Any, err: MikoPBXError) -> None:
    """Extend the fix of an error that a connection option most likely caused.

    The client cannot know what the user meant: a plain ``http://`` URL to a PBX that only serves
    HTTPS looks like a closed connection, and an API key sent to MikoPBX 2024.1 (which has no API
    keys and no v3 API) looks like a missing endpoint.
    """
    params = getattr(module, "params", None) or {}
    hints = []
    url = str(params.get("url") or "").strip().lower()
    if url.startswith("http://") and err.classification in ("unreachable", "timeout"):
        hints.append(
            "url starts with http://; the PBX may serve its API over HTTPS only: use https:// in url "
            "(with ca_path or validate_certs for its certificate)"
        )
    v3_path = str(err.path or "").startswith("/pbxcore/api/v3/")
    if params.get("api_key") and v3_path and err.classification == "not_found":
        hints.append(
            "API keys need MikoPBX 2026.1 or later (REST API v3); if this PBX runs MikoPBX 2024.x, which has "
            "neither, give username and password instead of api_key (with api_generation auto or legacy)"
        )
    if hints:
        err.hint = "; ".join(([err.hint] if err.hint else []) + hints)


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
