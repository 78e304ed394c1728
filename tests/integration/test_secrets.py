"""FC-18: no secret in any output at any verbosity, whichever way it is given.

Licence key, coupon, password and API key are passed inline, from the environment (the modules'
env fallbacks and the ``env`` lookup) and from files (the ``file`` lookup); the play runs with
``-vvv`` and ``--diff``, in check mode and for real, on a request that fails at the licensing
service and on one that fails at the login. The whole output of ansible-playbook is then searched
for every secret, in the forms it could leak in.
"""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.v3, pytest.mark.legacy]

MODULE = "mikopbx.marketplace.mikopbx_register"
UNKNOWN_KEY = "MIKO-SECRT-77777-88888-99999"
WRONG_PASSWORD = "Wr0ng-But-Secret-Pa55"


@pytest.fixture
def fleet(start_fleet):
    return start_fleet(count=2, generation="mixed", time_scale=0.05)


def secret_forms(secret: str) -> list[str]:
    """The secret and the derived forms a careless log could show."""
    forms = {secret, secret.lower()}
    if secret.startswith("MIKO"):
        forms.add(secret.replace("-", ""))
        forms.add(secret[:-5])  # everything but the last group, which the mask keeps
    return sorted(forms)


def assert_clean(output: str, secrets: list[str]) -> None:
    for secret in secrets:
        for form in secret_forms(secret):
            assert form not in output, "secret form %r found in the output" % form[:4]


def fleet_secrets(fleet) -> list[str]:
    found = []
    for host in fleet.names():
        for name in ("mikopbx_password", "mikopbx_api_key"):
            if fleet.var(host, name):
                found.append(fleet.var(host, name))
    return found


def inline_connection(fleet, host: str, password: str | None = None) -> dict[str, str]:
    """Connection options as literal values written into the playbook."""
    connection = {
        "url": fleet.var(host, "mikopbx_url"),
        "ca_path": fleet.var(host, "mikopbx_ca_path"),
        "api_generation": fleet.var(host, "mikopbx_generation"),
    }
    if fleet.var(host, "mikopbx_api_key") and password is None:
        connection["api_key"] = fleet.var(host, "mikopbx_api_key")
    else:
        connection["username"] = fleet.var(host, "mikopbx_username")
        connection["password"] = password or fleet.var(host, "mikopbx_password")
    return connection


def per_host_play(fleet, host: str, module_args: dict, extra_tasks: list | None = None) -> dict:
    tasks = list(extra_tasks or [])
    tasks.append({"name": "register", MODULE: module_args, "ignore_errors": True})
    return {"name": host, "hosts": host, "gather_facts": False, "tasks": tasks}


@pytest.mark.parametrize("check", [False, True], ids=["real", "check"])
def test_fc18_inline_secrets_failing_licence_request_vvv(fleet, run_playbook, check):
    key = fleet.control.create_company("Example LLC", "it@example.com")
    coupon = fleet.control.create_coupon(for_key=key)
    plays = []
    for host in fleet.names():
        plays.append(per_host_play(fleet, host, dict(inline_connection(fleet, host), license_key=UNKNOWN_KEY)))
        plays.append(per_host_play(fleet, host, dict(inline_connection(fleet, host), license_key=key, coupon=coupon)))

    run = run_playbook(fleet, playbook=plays, verbosity=3, diff=True, check=check)

    assert "licence:2026" in run.output or check  # the unknown key really failed at the licensing service
    assert "MIKO-*****-*****-*****-" + key[-5:] in run.output
    assert_clean(run.output, [UNKNOWN_KEY, key, coupon, *fleet_secrets(fleet)])


def test_fc18_wrong_inline_password_vvv(fleet, run_playbook):
    plays = [
        per_host_play(
            fleet, host, dict(inline_connection(fleet, host, password=WRONG_PASSWORD), license_key=UNKNOWN_KEY)
        )
        for host in fleet.names()
    ]

    run = run_playbook(fleet, playbook=plays, verbosity=3, diff=True)

    assert run.output.count("credentials rejected") >= 2
    assert_clean(run.output, [WRONG_PASSWORD, UNKNOWN_KEY, *fleet_secrets(fleet)])


def test_fc18_secrets_from_environment_vvv(fleet, run_playbook):
    key = fleet.control.create_company("Example LLC", "it@example.com")
    plays = []
    for host in fleet.names():
        connection = {"ca_path": fleet.var(host, "mikopbx_ca_path")}
        # The modules' env fallbacks (MIKOPBX_*) for the connection, the env lookup for the key.
        args = dict(connection, license_key="{{ lookup('ansible.builtin.env', 'TEST_LICENSE_KEY') }}")
        plays.append(per_host_play(fleet, host, args))
        plays[-1]["environment"] = {}
    secrets = fleet_secrets(fleet)

    for host in fleet.names():
        env = {
            "MIKOPBX_URL": fleet.var(host, "mikopbx_url"),
            "MIKOPBX_API_GENERATION": fleet.var(host, "mikopbx_generation"),
            "TEST_LICENSE_KEY": key,
        }
        if fleet.var(host, "mikopbx_api_key"):
            env["MIKOPBX_API_KEY"] = fleet.var(host, "mikopbx_api_key")
        else:
            env["MIKOPBX_USERNAME"] = fleet.var(host, "mikopbx_username")
            env["MIKOPBX_PASSWORD"] = fleet.var(host, "mikopbx_password")
        host_plays = [p for p in plays if p["hosts"] == host]

        run = run_playbook(fleet, playbook=host_plays, verbosity=3, diff=True, env=env)

        assert "applied_key" in run.output, run.output[-3000:]
        assert fleet.control.stored_key(host) == key
        assert_clean(run.output, [key, *secrets])


def test_fc18_secrets_from_file_lookup_vvv(fleet, run_playbook, tmp_path):
    key = fleet.control.create_company("Example LLC", "it@example.com")
    key_file = tmp_path / "licence.txt"
    key_file.write_text(" %s\n" % key.lower(), encoding="utf-8")  # as pasted from an e-mail
    plays = []
    for host in fleet.names():
        password_file = tmp_path / ("%s.password" % host)
        password_file.write_text(fleet.var(host, "mikopbx_password"), encoding="utf-8")
        args = {
            "url": fleet.var(host, "mikopbx_url"),
            "ca_path": fleet.var(host, "mikopbx_ca_path"),
            "api_generation": fleet.var(host, "mikopbx_generation"),
            "username": fleet.var(host, "mikopbx_username"),
            "password": "{{ lookup('ansible.builtin.file', '%s') }}" % password_file,
            # file lookups strip the trailing newline only: the module normalises the rest
            "license_key": "{{ lookup('ansible.builtin.file', '%s', rstrip=false) }}" % key_file,
        }
        plays.append(per_host_play(fleet, host, args))
    # A second run on the registered PBXs with a failing request: an unknown coupon.
    for host in fleet.names():
        password_file = tmp_path / ("%s.password" % host)
        args = dict(plays[0]["tasks"][0][MODULE])
        args.update(
            url=fleet.var(host, "mikopbx_url"),
            password="{{ lookup('ansible.builtin.file', '%s') }}" % password_file,
            api_generation=fleet.var(host, "mikopbx_generation"),
            coupon="MIKOUPD-NOSUC-H0000-C0UP0-N0000",
            force=True,
        )
        plays.append(per_host_play(fleet, host, args))

    run = run_playbook(fleet, playbook=plays, verbosity=3, diff=True)

    for host in fleet.names():
        assert fleet.control.stored_key(host) == key
    assert re.search(r"licence:2040", run.output), run.output[-3000:]
    assert_clean(run.output, [key, "MIKOUPD-NOSUC-H0000-C0UP0-N0000", *fleet_secrets(fleet)])
