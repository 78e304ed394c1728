"""mikopbx_license_binding as Ansible runs it: options, check mode, idempotency, results, masking.

The HTTP boundary is the fake transport of tests/unit/conftest.py; behind it a small stateful
stand-in for one v3 PBX and the licensing service (seats per machine, 2008 when full, resetKey
releasing the machine's seats) answers like the reference describes. Everything above the HTTP
adapter — module, client, envelope parser, licence and binding logic — is the real code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.mikopbx.marketplace.plugins.modules import mikopbx_license_binding as module

URL = "https://pbx.example.net"
API_KEY = "f" * 64
KEY = "MIKO-AAAAA-BBBBB-CCCCC-DDDDD"
FOREIGN = "MIKO-ZZZZZ-YYYYY-XXXXX-WWWWW"
MASKED = "MIKO-*****-*****-*****-DDDDD"
FOREIGN_MASKED = "MIKO-*****-*****-*****-WWWWW"

V3 = "/pbxcore/api/v3/"
SQL = V3 + "system:executeSqlRequest"
INFO = V3 + "license:getLicenseInfo"
RESET = V3 + "license:resetKey"
APPLY = V3 + "license:processUserRequest"
PING = V3 + "license:ping"
WRITE_PATHS = {RESET, APPLY}

TR_2008 = "The required licence is missing, or it is bound to a different MikoPBX station"
TR_2026 = "The licence key number is wrong. Check the key and try again"


def envelope(ok: bool, data=None, messages=None, function: str = "", http_code: int | None = None) -> dict:
    body = {
        "result": ok,
        "data": [] if data is None else data,
        "messages": [] if messages is None else messages,
        "function": function,
        "processor": "",
        "pid": 2101,
        "meta": {"timestamp": "2026-04-10T12:00:00+00:00", "hash": "0" * 40},
    }
    if http_code is not None:
        body["httpCode"] = http_code
    return body


@dataclass
class Licensing:
    """Companies and their base-feature seats, keyed by machine identity."""

    seats: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> {machine: pbx}
    count: dict[str, int] = field(default_factory=dict)

    def company(self, key: str, count: int = 10, holders: int = 0) -> None:
        self.count[key] = count
        self.seats[key] = {"machine-other-%02d" % i: "pbx-%03d" % (i + 100) for i in range(holders)}


@dataclass
class FakeV3PBX:
    """One 2026.1 PBX with an API key, its stored key and its machine identity."""

    licensing: Licensing
    stored: str = ""
    machine: str = "machine-self"

    def install(self, fake_http) -> None:
        fake_http.add("POST", SQL, self.sql)
        fake_http.add("GET", INFO, self.license_info)
        fake_http.add("GET", RESET, self.reset_key)
        fake_http.add("POST", APPLY, self.process_user_request)
        fake_http.add("GET", PING, {"json": envelope(True, function="ping")})

    def sql(self, request) -> dict:
        rows = [{"key": "PBXVersion", "value": "2026.1.223"}, {"key": "PBXLicense", "value": self.stored}]
        return {"json": envelope(True, {"rows": rows, "rowCount": 2, "affectedRows": 0}, function="executeSqlRequest")}

    def license_info(self, request) -> dict:
        if len(self.stored) != 28:
            return {
                "status": 400,
                "json": envelope(False, messages={"error": ["License key entered incorrectly"]}, http_code=400),
            }
        seats = self.licensing.seats.get(self.stored, {})
        if self.machine not in seats:
            return {"status": 422, "json": envelope(False, messages=["2008: Failed to capture feature"])}
        info = {
            "@attributes": {"key": self.stored, "companyname": "Example LLC", "email": "admin@example.com"},
            "product": {
                "@attributes": {"name": "MikoPBX", "expired": "", "trial": "0"},
                "feature": {
                    "@attributes": {
                        "name": "MikoPBX base",
                        "count": str(self.licensing.count[self.stored]),
                        "counteach": "1",
                        "captured": str(len(seats)),
                    }
                },
            },
        }
        return {"json": envelope(True, {"licenseInfo": json.dumps(info)}, function="getLicenseInfo")}

    def reset_key(self, request) -> dict:
        self.licensing.seats.get(self.stored, {}).pop(self.machine, None)
        self.stored = ""
        return {"json": envelope(True, function="resetKey")}

    def process_user_request(self, request) -> dict:
        key = request.json["licKey"]
        if key == self.stored:  # v3 answers a re-applied key without asking the licensing service
            return {"json": envelope(True, {"PBXLicense": key}, {"info": ["Registration completed successfully"]})}
        seats = self.licensing.seats.get(key)
        if seats is None:
            return {"status": 400, "json": envelope(False, messages={"license": [TR_2026]}, http_code=400)}
        if self.machine not in seats and len(seats) >= self.licensing.count[key]:
            return {"status": 400, "json": envelope(False, messages={"license": [TR_2008]}, http_code=400)}
        seats[self.machine] = "self"
        self.stored = key
        return {"json": envelope(True, {"PBXLicense": key}, {"info": ["Registration completed successfully"]})}


@pytest.fixture
def world(fake_http):
    licensing = Licensing()
    licensing.company(KEY, count=10, holders=3)
    licensing.company(FOREIGN, count=10)
    pbx = FakeV3PBX(licensing)
    pbx.install(fake_http)
    return pbx


def run(args: dict, check_mode: bool = False, diff: bool = False, capsys=None) -> tuple[dict, bool, str]:
    """Run the module once; returns (result, failed, raw stdout)."""
    full = {"url": URL, "api_key": API_KEY, "_ansible_check_mode": check_mode, "_ansible_diff": diff}
    full.update(args)
    with patch_module_args(full):
        with pytest.raises(SystemExit):
            module.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    return result, bool(result.get("failed")), out


def warning_text(warning) -> str:
    """ansible-core 2.19 returns warnings as summaries ({"event": {"msg": ...}}), older ones as strings."""
    if isinstance(warning, dict):
        return json.dumps(warning)
    return str(warning)


def writes(fake_http) -> list[str]:
    return [r.path for r in fake_http.requests if r.path in WRITE_PATHS]


def assert_no_secret(out: str) -> None:
    for secret in (KEY, FOREIGN, "AAAAA-BBBBB-CCCCC", "ZZZZZ-YYYYY-XXXXX", API_KEY):
        assert secret not in out


# ------------------------------------------------------------------------------ options


def test_argspec_agrees_with_documentation():
    import yaml

    doc = yaml.safe_load(module.DOCUMENTATION)["options"]
    spec = module.argument_spec()
    own = {k: v for k, v in spec.items() if k in doc}
    assert set(own) == set(doc)
    for name, option in own.items():
        assert option.get("type", "str") == doc[name].get("type", "str"), name
        assert option.get("default") == doc[name].get("default"), name
        assert option.get("choices") == doc[name].get("choices"), name
    assert set(spec["known_seats"]["options"]) == set(doc["known_seats"]["suboptions"])
    # Names containing "key" are explicit about logging; only the licence key itself is secret.
    assert spec["license_key"]["no_log"] is True
    assert spec["replace_key"]["no_log"] is False and spec["known_seats"]["no_log"] is False
    assert spec["force_release"]["no_log"] is False


def test_present_requires_license_key(fake_http, capsys):
    result, failed, _out = run({"state": "present"}, capsys=capsys)
    assert failed and "license_key" in result["msg"]
    assert fake_http.requests == []


def test_malformed_key_is_rejected_before_any_request(fake_http, capsys):
    result, failed, out = run({"state": "present", "license_key": "MIKO-AAAAA-BBBBB-CCCCC-DDDD"}, capsys=capsys)
    assert failed and "one character short" in result["msg"]
    assert fake_http.requests == []
    assert "MIKO-AAAAA-BBBBB-CCCCC-DDDD" not in out


def test_key_is_normalised(world, fake_http, capsys):
    result, failed, out = run({"state": "present", "license_key": "  miko-aaaaa-bbbbb-ccccc-ddddd\n"}, capsys=capsys)
    assert not failed and result["changed"] is True
    assert world.stored == KEY
    assert_no_secret(out)


# ------------------------------------------------------------------------------ present


def test_bind_then_rerun_is_idempotent_with_no_write(world, fake_http, capsys):
    first, failed, out = run({"state": "present", "license_key": KEY}, capsys=capsys)
    assert not failed, first["msg"]
    assert first["changed"] is True and first["actions"] == ["apply_key"]
    assert first["binding_status"] == "unbound" and first["binding_status_after"] == "ok"
    assert first["seats"]["captured"] == 4 and first["seats"]["free"] == 6 and first["seats"]["host_limit"] == 10
    assert first["license_key_masked"] == MASKED and first["generation"] == "v3"
    assert_no_secret(out)
    seats_after_first = dict(world.licensing.seats[KEY])

    fake_http.requests.clear()
    second, failed, out = run({"state": "present", "license_key": KEY}, capsys=capsys)
    assert not failed and second["changed"] is False and second["actions"] == []
    assert writes(fake_http) == []
    assert [r.path for r in fake_http.requests] == [SQL, INFO]
    assert world.licensing.seats[KEY] == seats_after_first


def test_check_mode_bind_sends_no_write_and_says_what_would_change(world, fake_http, capsys):
    result, failed, out = run({"state": "present", "license_key": KEY}, check_mode=True, diff=True, capsys=capsys)
    assert not failed and result["changed"] is True
    assert writes(fake_http) == []
    assert world.stored == ""
    assert result["msg"].startswith("would bind")
    assert result["diff"] == {
        "before": {"binding_status": "unbound", "license_key": None},
        "after": {"binding_status": "ok", "license_key": MASKED},
    }
    assert_no_secret(out)


def test_check_mode_replace_key_sends_no_reset(world, fake_http, capsys):
    world.stored = FOREIGN
    result, failed, out = run(
        {"state": "present", "license_key": KEY, "replace_key": True}, check_mode=True, diff=True, capsys=capsys
    )
    assert not failed and result["actions"] == ["reset_key", "apply_key"]
    assert writes(fake_http) == []
    assert result["diff"]["before"]["license_key"] == FOREIGN_MASKED
    assert_no_secret(out)


def test_foreign_key_fails_naming_masked_keys_and_fix(world, fake_http, capsys):
    world.stored = FOREIGN
    result, failed, out = run({"state": "present", "license_key": KEY}, capsys=capsys)
    assert failed and result["binding_status"] == "key_mismatch"
    assert FOREIGN_MASKED in result["msg"] and MASKED in result["msg"] and "replace_key: true" in result["msg"]
    assert writes(fake_http) == []
    assert_no_secret(out)


def test_foreign_key_replaced(world, fake_http, capsys):
    world.stored = FOREIGN
    world.licensing.seats[FOREIGN][world.machine] = "self"
    result, failed, out = run({"state": "present", "license_key": KEY, "replace_key": True}, capsys=capsys)
    assert not failed and result["binding_status_after"] == "ok"
    assert writes(fake_http) == [RESET, APPLY]
    assert world.machine not in world.licensing.seats[FOREIGN]
    assert result["released_key_masked"] == FOREIGN_MASKED
    assert_no_secret(out)


def test_restored_onto_new_machine_is_rebound_once(world, fake_http, capsys):
    world.stored = KEY  # a backup of a bound PBX restored onto hardware that holds no seat
    verdict, failed, _out = run({"state": "verified", "license_key": KEY}, capsys=capsys)
    assert not failed and verdict["binding_status"] == "binding_required" and verdict["changed"] is False

    fake_http.requests.clear()
    fixed, failed, out = run({"state": "present", "license_key": KEY}, capsys=capsys)
    assert not failed and fixed["binding_status_after"] == "ok"
    assert writes(fake_http) == [RESET, APPLY]
    assert len(world.licensing.seats[KEY]) == 4

    fake_http.requests.clear()
    again, failed, _out = run({"state": "present", "license_key": KEY}, capsys=capsys)
    assert not failed and again["changed"] is False and writes(fake_http) == []
    assert len(world.licensing.seats[KEY]) == 4


def test_full_key_known_seats_fails_before_any_write(world, fake_http, capsys):
    holders = ["pbx-%03d" % i for i in range(1, 11)]
    result, failed, out = run(
        {
            "state": "present",
            "license_key": KEY,
            "previous_host": "pbx-007",
            "known_seats": {"count": 10, "captured": 10, "holders": holders},
        },
        capsys=capsys,
    )
    assert failed and writes(fake_http) == []
    assert "10 of 10 seats captured" in result["msg"] and "pbx-010" in result["msg"]
    step = result["manual_step"]
    assert step["reset_seat_of"] == "pbx-007" and step["license_key_masked"] == MASKED
    # Classified like the refusal it predicts, so a fleet summary lists the host under 2008.
    assert result["licence_error"]["code"] == 2008 and result["error"]["classification"] == "licence:2008"
    assert "client-cabinet/session/index/<license key>/" in step["page"]
    assert_no_secret(out)


def test_full_key_without_figures_maps_2008_once(world, fake_http, capsys):
    world.licensing.company(KEY, count=10, holders=10)
    result, failed, out = run({"state": "present", "license_key": KEY, "previous_host": "pbx-007"}, capsys=capsys)
    assert failed and result["licence_error"]["code"] == 2008
    assert writes(fake_http) == [APPLY]  # one attempt, no retry loop
    assert world.stored == "" and len(world.licensing.seats[KEY]) == 10
    assert "pbx-007" in result["manual_step"]["instructions"]
    assert_no_secret(out)


def test_seat_shortage_warn_does_not_fail(world, fake_http, capsys):
    result, failed, out = run(
        {
            "state": "present",
            "license_key": KEY,
            "on_seat_shortage": "warn",
            "known_seats": {"count": 10, "captured": 10},
        },
        capsys=capsys,
    )
    assert not failed and result["changed"] is False and writes(fake_http) == []
    assert result["manual_step"] is not None
    assert any("licence cabinet" in warning_text(w) for w in result.get("warnings", []))
    assert_no_secret(out)


def test_unknown_key_is_not_a_seat_problem(world, fake_http, capsys):
    other = "MIKO-QQQQQ-QQQQQ-QQQQQ-QQQQQ"
    result, failed, out = run({"state": "present", "license_key": other}, capsys=capsys)
    assert failed and result.get("manual_step") is None
    assert result["error"]["licence_code"] == 2026
    assert other not in out


# ------------------------------------------------------------------------------ absent


def test_release_then_rerun(world, fake_http, capsys):
    world.stored = KEY
    world.licensing.seats[KEY][world.machine] = "self"
    first, failed, out = run({"state": "absent"}, diff=True, capsys=capsys)
    assert not failed and first["changed"] is True and first["released_key_masked"] == MASKED
    assert writes(fake_http) == [RESET]
    assert world.machine not in world.licensing.seats[KEY]
    assert first["diff"]["after"] == {"binding_status": "unbound", "license_key": None}
    assert_no_secret(out)

    fake_http.requests.clear()
    second, failed, _out = run({"state": "absent"}, capsys=capsys)
    assert not failed and second["changed"] is False and second["released_key_masked"] is None
    assert writes(fake_http) == [] and [r.path for r in fake_http.requests] == [SQL]


def test_release_in_check_mode_sends_no_reset_key(world, fake_http, capsys):
    world.stored = KEY
    world.licensing.seats[KEY][world.machine] = "self"
    result, failed, out = run({"state": "absent"}, check_mode=True, capsys=capsys)
    assert not failed and result["changed"] is True and result["released_key_masked"] == MASKED
    assert writes(fake_http) == [] and world.stored == KEY
    assert "diff" not in result


# ------------------------------------------------------------------------------ verified


@pytest.mark.parametrize(
    ("stored", "seat", "expected", "status"),
    [
        (KEY, True, KEY, "ok"),
        ("", False, KEY, "unbound"),
        (FOREIGN, False, KEY, "key_mismatch"),
        (KEY, False, KEY, "binding_required"),
        (KEY, False, None, "binding_required"),
    ],
)
def test_verified_statuses_are_read_only(world, fake_http, capsys, stored, seat, expected, status):
    world.stored = stored
    if seat:
        world.licensing.seats[stored][world.machine] = "self"
    args = {"state": "verified"}
    if expected:
        args["license_key"] = expected
    result, failed, out = run(args, capsys=capsys)
    assert not failed and result["binding_status"] == status and result["changed"] is False
    assert writes(fake_http) == []
    assert_no_secret(out)


def test_verified_licensing_down_is_unknown(world, fake_http, capsys):
    world.stored = KEY
    world.licensing.seats[KEY][world.machine] = "self"
    no_answer = envelope(False, messages=["0: No answer from the local licence service"])
    fake_http.set("GET", INFO, status=422, json=no_answer)
    result, failed, _out = run({"state": "verified", "license_key": KEY}, capsys=capsys)
    assert not failed and result["binding_status"] == "unknown"


def test_verified_fail_on_status(world, fake_http, capsys):
    world.stored = KEY
    result, failed, out = run(
        {"state": "verified", "license_key": KEY, "fail_on_status": ["binding_required", "unknown"]}, capsys=capsys
    )
    assert failed and result["binding_status"] == "binding_required"
    assert writes(fake_http) == []
    assert_no_secret(out)


# ------------------------------------------------------------------------------ safety: no lost key, no leaked seat

NO_ANSWER = envelope(False, messages=["0: No answer from the local licence service"])


def test_release_refused_while_the_licensing_service_is_silent(world, fake_http, capsys):
    world.stored = KEY
    world.licensing.seats[KEY][world.machine] = "self"
    fake_http.set("GET", INFO, status=422, json=NO_ANSWER)
    for check_mode in (False, True):
        result, failed, out = run({"state": "absent"}, check_mode=check_mode, capsys=capsys)
        assert failed and result["changed"] is False and result["binding_status"] == "unknown"
        assert "443" in result["msg"] and result["manual_step"]["instructions"]
        assert_no_secret(out)
    assert writes(fake_http) == [] and world.stored == KEY
    assert world.machine in world.licensing.seats[KEY]


def test_force_release_clears_the_key_warns_and_returns_the_cabinet_step(world, fake_http, capsys):
    world.stored = KEY
    world.licensing.seats[KEY][world.machine] = "self"
    fake_http.set("GET", INFO, status=422, json=NO_ANSWER)

    def reset_without_licensing(request) -> dict:  # the seat stays held: the licensing service is silent
        world.stored = ""
        return {"json": envelope(True, function="resetKey")}

    fake_http.set("GET", RESET, reset_without_licensing)
    result, failed, out = run({"state": "absent", "force_release": True}, capsys=capsys)
    assert not failed and result["changed"] is True and world.stored == ""
    assert result["manual_step"] and "stays held" in " ".join(warning_text(w) for w in result["warnings"])
    assert_no_secret(out)


@pytest.mark.parametrize("case", ["typo_2026", "full_2008"])
def test_replace_key_refused_leaves_the_previous_key_and_its_seat(world, fake_http, capsys, case):
    world.stored = FOREIGN
    world.licensing.seats[FOREIGN][world.machine] = "self"
    new_key = KEY
    if case == "typo_2026":
        new_key = "MIKO-QQQQQ-QQQQQ-QQQQQ-QQQQQ"
    else:
        world.licensing.company(KEY, count=3, holders=3)
    result, failed, out = run({"state": "present", "license_key": new_key, "replace_key": True}, capsys=capsys)
    assert failed and result["changed"] is False
    assert world.stored == FOREIGN and world.machine in world.licensing.seats[FOREIGN]
    assert result["license_key_masked"] == FOREIGN_MASKED and FOREIGN_MASKED in result["msg"]
    assert result["error"]["licence_code"] == (2026 if case == "typo_2026" else 2008)
    assert writes(fake_http) == [RESET, APPLY, APPLY]
    assert new_key not in out
    assert_no_secret(out)
