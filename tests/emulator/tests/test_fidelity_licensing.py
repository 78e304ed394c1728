"""Fidelity of the emulated licensing model (design.md §2 "Licensing model", reference §5, §7.4, §5.6 codes).

The licence library is closed; the design fixes our reading of the reference: one company key, the MikoPBX
product (11) with the base feature (33) holding one seat per machine (10 by default), trial issuance
(2022/2051), coupons (2037/2040/2041/2057), invalid keys (2026/2009), expired features (2011), the hourly check
that switches licence-less modules off, resetKey releasing seats, and getLicenseInfo answering 2008 for a
machine without a seat (a backup restored onto new hardware).

Every behaviour is checked for both generations: the HTTP/status mapping differs (§5.2, §12) -- v3 maps
licence errors to 400/502/503/422, legacy always answers HTTP 200 with result false.
"""

from __future__ import annotations

import json

import pytest
from fidelity_helpers import (
    describe,
    expect,
    fleet_fixture,
    messages_of,
    module_row,
    random_coupon,
    random_key,
    trial_fields,
    unique_email,
    wait_until,
)

GENS = ["v3", "legacy"]

# Time scale 0.1: expiries/waits 10x faster; tests move the clock explicitly for the 120 s cache.
fleet = fleet_fixture(count=80, generation="mixed", time_scale=0.1, rate_limit=False)
# A separate fleet for the seat arithmetic: 10 seats per key + one machine too many.
seats_fleet = fleet_fixture(count=12, generation="mixed", time_scale=0.1, name="seats_fleet", rate_limit=False)


def take(fv, gen):
    used = getattr(fv, "_used", set())
    fv._used = used
    for n in fv.names(gen):
        if n not in used:
            used.add(n)
            return fv.pbx(n)
    raise AssertionError(f"licensing fleet too small: no unused {gen} PBX")


def licence_failure(pbx, resp, v3_status, ref, sent=None):
    """Assert a processUserRequest licence failure per generation; return the JSON body."""
    if pbx.generation == "v3":
        data = expect(resp, v3_status, ref, sent)
        assert data.get("httpCode") == v3_status, describe(resp, sent)
    else:
        data = expect(resp, 200, f"{ref} (legacy: HTTP always 200, §5.1)", sent)
        assert "httpCode" not in data, describe(resp, sent)
    assert data["result"] is False, describe(resp, sent)
    assert messages_of(data, "license"), f"licence errors go to messages.license (§4): {describe(resp, sent)}"
    return data


def info_failure(pbx, resp, ref):
    """getLicenseInfo failure for a key the server refuses: v3 422 + plain-list raw error; legacy 200, result
    false, empty messages (§5.2)."""
    if pbx.generation == "v3":
        data = expect(resp, 422, ref)
        assert data["result"] is False and isinstance(data["messages"], list) and data["messages"], describe(resp)
    else:
        data = expect(resp, 200, ref)
        assert data["result"] is False and data["messages"] == [], describe(resp)
    return data


def decoded_info(pbx):
    resp = pbx.lic_info()
    data = expect(resp, 200, "§5.2 getLicenseInfo")
    assert data["result"] is True and isinstance(data["data"]["licenseInfo"], str), describe(resp)
    return json.loads(data["data"]["licenseInfo"])


def as_list(x):
    return x if isinstance(x, list) else [x]


def base_feature(info):
    for p in as_list(info.get("product", [])):
        if p["@attributes"]["name"] == "MikoPBX":
            for f in as_list(p.get("feature", [])):
                if f["@attributes"]["name"] == "MikoPBX base":
                    return f["@attributes"]
    raise AssertionError(f"no MikoPBX base feature in {info}")


def apply_key(pbx, key):
    resp = pbx.lic_request({"licKey": key})
    data = expect(resp, 200, "§11.3 key accepted", {"licKey": key})
    assert data["result"] is True, describe(resp)
    return data


def create_coupon(fv, **fields):
    """Control helper: a coupon in the emulated licensing service (design.md §2 licensing model)."""
    return fv.control._call("POST", "/control/licensing/coupons", fields)["coupon"]


# ------------------------------------------------------------------------------------------ trial


@pytest.mark.parametrize("gen", GENS)
def test_trial_registration_issues_key(fleet, gen):
    """§5.2 step 2 / §5.3 / design: no key -> trial registration with the company fields issues a new company key;
    result true, data.PBXLicense, messages.info a string; the name reaches the licence byte-exact (UTF-8)."""
    pbx = take(fleet, gen)
    fields = trial_fields(company='ООО "Ромашка" ' + gen, email=unique_email("trial"))
    fields["contact"] = "Иван Петров"
    resp = pbx.lic_request(fields)
    data = expect(resp, 200, "§11.3 trial success", fields)
    assert data["result"] is True and isinstance(data["messages"]["info"], str), describe(resp, fields)
    key = data["data"]["PBXLicense"]
    assert len(key) == 28 and key.startswith("MIKO-"), describe(resp)
    assert fleet.control.license_key(pbx.name) == key
    info = decoded_info(pbx)
    attrs = info["@attributes"]
    assert attrs["key"] == key and attrs["companyname"] == fields["companyname"], attrs
    assert attrs["email"] == fields["email"] and attrs["contact"] == "Иван Петров", attrs
    assert base_feature(info)["captured"] == "1", info
    machines = {s["machine_id"] for s in fleet.control.seats(key)}
    assert fleet.control.machine_id(pbx.name) in machines


@pytest.mark.parametrize("gen", GENS)
def test_trial_2022_email_of_another_company(fleet, gen):
    """§5.6 2022 / design: trial with an e-mail that already belongs to another company -> licence error 2022;
    v3 HTTP 502 (§11.3 trial failure), legacy 200 result false; nothing stored."""
    pbx = take(fleet, gen)
    email = unique_email("taken")
    fleet.control.create_company(companyname="First Company", email=email)
    sent = trial_fields(company="Second Company", email=email)
    resp = pbx.lic_request(sent)
    licence_failure(pbx, resp, 502, "§11.3 trial failure (2022)", sent)
    assert fleet.control.license_key(pbx.name) == ""


@pytest.mark.parametrize("gen", GENS)
def test_trial_2051_machine_registered_with_other_email(fleet, gen):
    """§5.6 2051 / design: this machine was registered with another e-mail -> 2051 (v3 502, legacy 200 false);
    its message differs from the 2022 one."""
    pbx = take(fleet, gen)
    first = trial_fields(email=unique_email("first"))
    expect(pbx.lic_request(first), 200, "§11.3 first trial", first)
    expect(pbx.lic_reset(), 200, "§5.2 resetKey")
    second = trial_fields(email=unique_email("second"))
    resp = pbx.lic_request(second)
    data = licence_failure(pbx, resp, 502, "§11.3 trial failure (2051)", second)
    assert fleet.control.license_key(pbx.name) == ""
    # a different cause must read differently from 2022 (same generation, other PBX)
    other = take(fleet, gen)
    email = unique_email("taken2")
    fleet.control.create_company(companyname="Owner", email=email)
    d2022 = licence_failure(
        other, other.lic_request(trial_fields(company="Intruder", email=email)), 502, "§11.3 trial failure (2022)"
    )
    assert messages_of(data, "license") != messages_of(d2022, "license"), (data, d2022)


@pytest.mark.parametrize("gen", GENS)
def test_trial_without_company_fields_fails(fleet, gen):
    """§5.2 step 2: no key and no company data -> the trial registration fails (v3 502), nothing stored."""
    pbx = take(fleet, gen)
    resp = pbx.lic_request({"licKey": ""})
    licence_failure(pbx, resp, 502, "§5.2 trial failure", {"licKey": ""})
    assert fleet.control.license_key(pbx.name) == ""


# ------------------------------------------------------------------------------------------ seats


def test_ten_seats_per_key_then_2008_and_reset_releases(seats_fleet):
    """design licensing model: a company key has 10 base seats (one per machine); the 11th machine gets 2008 and
    nothing is stored (v3 400, legacy 200 false); resetKey releases that machine's seat so another can bind."""
    fv = seats_fleet
    key = fv.control.create_company()
    names = fv.names()
    assert len(names) >= 11
    holders = [fv.pbx(n) for n in names[:10]]
    for pbx in holders:
        apply_key(pbx, key)
    seats = fv.control.seats(key)
    assert len(seats) == 10, seats
    assert {s["machine_id"] for s in seats} == {fv.control.machine_id(p.name) for p in holders}, seats
    base = base_feature(decoded_info(holders[0]))
    assert base["count"] == "10" and base["captured"] == "10", base
    eleventh = fv.pbx(names[10])
    sent = {"licKey": key}
    resp = eleventh.lic_request(sent)
    licence_failure(eleventh, resp, 400, "design (2008 -> 'any other code' -> 400, §5.2)", sent)
    assert fv.control.license_key(eleventh.name) == "" and len(fv.control.seats(key)) == 10
    # release one seat through the PBX, then the 11th can bind
    expect(holders[0].lic_reset(), 200, "§5.2 resetKey")
    seats = fv.control.seats(key)
    assert len(seats) == 9 and fv.control.machine_id(holders[0].name) not in {s["machine_id"] for s in seats}
    apply_key(eleventh, key)
    assert len(fv.control.seats(key)) == 10 and fv.control.license_key(eleventh.name) == key


@pytest.mark.parametrize("gen", GENS)
def test_cabinet_seat_freed_license_info_2008(fleet, gen):
    """design: getLicenseInfo answers only for a machine holding a seat; after the operator frees it in the
    cabinet (and the 120 s cache passes) -> failure (v3 422 plain list with the raw 2008, legacy 200 false [])."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company()
    apply_key(pbx, key)
    decoded_info(pbx)
    fleet.control.free_seat(key, fleet.control.machine_id(pbx.name))
    fleet.control.advance(125)
    data = info_failure(pbx, pbx.lic_info(), "design 2008 for a machine without a seat")
    if gen == "v3":
        assert any("2008" in str(m) for m in data["messages"]), data


@pytest.mark.parametrize("gen", GENS)
def test_restore_onto_new_machine_needs_binding(fleet, gen):
    """design + FC-10: a backup restored onto new hardware keeps PBXLicense but its machine holds no seat ->
    getLicenseInfo fails (2008) although a key string is present; the same key again does not bind on either
    generation (v3: result true without a server call; legacy: result false, no messages); resetKey + apply binds."""
    src = take(fleet, gen)
    dst = take(fleet, gen)
    key = fleet.control.create_company()
    apply_key(src, key)
    old_machine = fleet.control.machine_id(dst.name)
    snap = fleet.control.snapshot(src.name)
    fleet.control.restore(dst.name, snap, new_machine=True)
    new_machine = fleet.control.machine_id(dst.name)
    assert new_machine not in (old_machine, fleet.control.machine_id(src.name))
    assert fleet.control.license_key(dst.name) == key
    info_failure(dst, dst.lic_info(), "design: restored machine has no seat -> 2008")
    decoded_info(src)  # the original still has its seat
    resp = dst.lic_request({"licKey": key})
    data = expect(resp, 200, "§5.2 same key")
    if gen == "v3":
        assert data["result"] is True, describe(resp)
    else:
        assert data["result"] is False and data["messages"] == [], describe(resp)
    assert new_machine not in {s["machine_id"] for s in fleet.control.seats(key)}, "same key must not bind"
    expect(dst.lic_reset(), 200, "§5.2 resetKey")
    apply_key(dst, key)
    assert new_machine in {s["machine_id"] for s in fleet.control.seats(key)}
    if gen == "legacy":
        # legacy caches every getLicenseInfo answer 120 s (v3 only successful ones, §5.2)
        fleet.control.advance(125)
    assert decoded_info(dst)["@attributes"]["key"] == key


# ------------------------------------------------------------------------------------------ invalid keys


@pytest.mark.parametrize("gen", GENS)
def test_unknown_key_2026_and_blocked_key_2009(fleet, gen):
    """§5.2 / §5.6: unknown key -> 2026 (v3 400; legacy 200 + lic_FailedCheckLicense2026 text); a blocked key ->
    2009 (v3 400 'any other code'; legacy 200 + the raw error) -- different messages; nothing stored."""
    pbx = take(fleet, gen)
    sent = {"licKey": random_key()}
    d2026 = licence_failure(pbx, pbx.lic_request(sent), 400, "§5.2 2026", sent)
    blocked = fleet.control.create_company()
    fleet.control._call("PATCH", f"/control/licensing/keys/{blocked}", {"revoked": True})
    sent = {"licKey": blocked}
    d2009 = licence_failure(pbx, pbx.lic_request(sent), 400, "§5.6 2009", sent)
    assert messages_of(d2026, "license") != messages_of(d2009, "license"), (d2026, d2009)
    assert fleet.control.license_key(pbx.name) == ""


# ------------------------------------------------------------------------------------------ coupons


@pytest.mark.parametrize("gen", GENS)
def test_coupon_activation_and_reuse_2041(fleet, gen):
    """§5.2 / §5.6: key + valid coupon -> result true with the coupon message; the same coupon again -> 2041
    (v3 502, legacy 200 false)."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company()
    apply_key(pbx, key)
    coupon = create_coupon(fleet)
    other = fleet.control.create_company()
    sent = {"licKey": key, "coupon": coupon}
    resp = pbx.lic_request(sent)
    data = expect(resp, 200, "§5.2 coupon success", sent)
    assert data["result"] is True and messages_of(data, "info"), describe(resp, sent)
    other_pbx = take(fleet, gen)
    apply_key(other_pbx, other)
    sent = {"licKey": other, "coupon": coupon}
    licence_failure(other_pbx, other_pbx.lic_request(sent), 502, "§5.2 coupon failure (2041)", sent)


@pytest.mark.parametrize("gen", GENS)
def test_coupon_unknown_2040_blocked_2057_foreign_2037(fleet, gen):
    """§5.6: unknown coupon 2040, blocked coupon 2057, coupon issued for another key 2037 -- each a coupon failure
    (v3 502, legacy 200 false) with its own message."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company()
    apply_key(pbx, key)
    foreign_key = fleet.control.create_company()
    cases = {
        2040: random_coupon(),
        2057: create_coupon(fleet, state="blocked"),
        2037: create_coupon(fleet, for_key=foreign_key),
    }
    texts = {}
    for code, coupon in cases.items():
        sent = {"licKey": key, "coupon": coupon}
        data = licence_failure(pbx, pbx.lic_request(sent), 502, f"§5.2 coupon failure ({code})", sent)
        texts[code] = tuple(messages_of(data, "license"))
    assert len(set(texts.values())) == 3, texts
    assert fleet.control.license_key(pbx.name) == key


@pytest.mark.parametrize("gen", GENS)
def test_coupon_is_tried_after_a_failed_key(fleet, gen):
    """§5.2: the coupon is activated even when the key check just failed -> the answer is the coupon failure
    (v3 502, not the key's 400); nothing stored."""
    pbx = take(fleet, gen)
    coupon = create_coupon(fleet)
    sent = {"licKey": random_key(), "coupon": coupon}
    data = licence_failure(pbx, pbx.lic_request(sent), 502, "§5.2 coupon after failed key", sent)
    assert fleet.control.license_key(pbx.name) == ""
    if gen == "v3":
        assert len(messages_of(data, "license")) >= 1


@pytest.mark.parametrize("gen", GENS)
def test_new_key_with_bad_coupon_keeps_key(fleet, gen):
    """§11.3: new key accepted, coupon fails -> result false, messages.info may hold the activation while
    messages.license holds the coupon error (v3 502); the new key is stored."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company()
    sent = {"licKey": key, "coupon": random_coupon()}
    licence_failure(pbx, pbx.lic_request(sent), 502, "§11.3 key ok, coupon failed", sent)
    assert fleet.control.license_key(pbx.name) == key


# ------------------------------------------------------------------------------------------ modules + licence


@pytest.mark.parametrize("gen", GENS)
def test_expired_feature_2011_on_enable(fleet, gen):
    """§7.4 / §5.6 2011: enabling a module whose product expired -> refused with messages.license (v3 422, legacy
    200 false), row DisabledByLicense; the message differs from a module that is not licensed at all (2008)."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company(
        products=[
            {
                "id": 101,
                "name": "Users and access rights",
                "expired": "2020-01-01",
                "trial": False,
                "features": [{"id": 201, "name": "Users and access rights", "count": 5}],
            },
        ]
    )
    apply_key(pbx, key)
    prods = as_list(decoded_info(pbx)["product"])
    assert any(p["@attributes"]["expired"] == "2020-01-01" for p in prods), prods
    fleet.control.set_modules(
        pbx.name,
        [
            module_row("ModuleUsersUI", disabled=True, reason="DisabledByUser", feature=201, product=101),
            module_row("ModuleAutoDialer", disabled=True, reason="DisabledByUser", feature=203, product=103),
        ],
    )
    texts = {}
    for uniqid in ("ModuleUsersUI", "ModuleAutoDialer"):
        resp = pbx.module_enable(uniqid)
        data = expect(resp, 422 if gen == "v3" else 200, "§7.4 / §11.6")
        assert data["result"] is False and messages_of(data, "license"), describe(resp)
        texts[uniqid] = messages_of(data, "license")
        row = fleet.control.modules(pbx.name)[uniqid]
        assert str(row["disabled"]) == "1" and row["disableReason"] == "DisabledByLicense" and row["disableReasonText"]
    assert texts["ModuleUsersUI"] != texts["ModuleAutoDialer"], texts


@pytest.mark.parametrize("gen", GENS)
def test_hourly_check_disables_licence_less_modules(fleet, gen):
    """§5.7 / §7.4: the hourly check switches enabled modules whose feature is not available off with
    DisabledByLicense + a reason text; licensed and free modules stay on, user-disabled stay as they were."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company(
        products=[
            {
                "id": 102,
                "name": "Bitrix24 integration",
                "expired": "2099-12-31",
                "trial": False,
                "features": [{"id": 202, "name": "Bitrix24 integration", "count": 5}],
            },
        ]
    )
    apply_key(pbx, key)
    cap = {"featureId": 202, "productId": 102} if gen == "v3" else {"licFeatureId": 202, "licProductId": 102}
    path = pbx.lic_path("captureFeatureForProductId")
    resp = pbx.post(path, json=cap) if gen == "v3" else pbx.post(path, data=cap)
    assert expect(resp, 200, "§5.2 captureFeatureForProductId", cap)["result"] is True, describe(resp, cap)
    fleet.control.set_modules(
        pbx.name,
        [
            module_row("ModuleUsersUI", feature=201, product=101),
            module_row("ModuleBitrix24Integration", feature=202, product=102),
            module_row("ModuleTemplate"),
            module_row("ModuleBackup", disabled=True, reason="DisabledByUser" if gen == "legacy" else ""),
        ],
    )
    fleet.control.license_check(pbx.name)
    mods = fleet.control.modules(pbx.name)
    assert str(mods["ModuleUsersUI"]["disabled"]) == "1", mods["ModuleUsersUI"]
    assert mods["ModuleUsersUI"]["disableReason"] == "DisabledByLicense", mods["ModuleUsersUI"]
    assert mods["ModuleUsersUI"]["disableReasonText"], mods["ModuleUsersUI"]
    assert str(mods["ModuleBitrix24Integration"]["disabled"]) == "0", mods["ModuleBitrix24Integration"]
    assert str(mods["ModuleTemplate"]["disabled"]) == "0", mods["ModuleTemplate"]
    assert str(mods["ModuleBackup"]["disabled"]) == "1", mods["ModuleBackup"]
    assert mods["ModuleBackup"]["disableReason"] != "DisabledByLicense", mods["ModuleBackup"]


@pytest.mark.parametrize("gen", GENS)
def test_hourly_check_runs_when_the_clock_passes_an_hour(fleet, gen):
    """§5.7: the check runs by itself at most once an hour (3600 + 0..300 s): moving the clock past that switches
    a licence-less enabled module off without any API call."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company()
    apply_key(pbx, key)
    fleet.control.set_modules(pbx.name, [module_row("ModuleQueueCallBack", feature=204, product=104)])
    fleet.control.advance(3600 + 301)

    def switched_off():
        row = fleet.control.modules(pbx.name)["ModuleQueueCallBack"]
        return str(row["disabled"]) == "1" and row["disableReason"] == "DisabledByLicense"

    assert wait_until(switched_off, timeout=15), fleet.control.modules(pbx.name)


# ------------------------------------------------------------------------------------------ captureFeature


def capture(pbx, feature_id, product_id):
    if pbx.generation == "v3":
        sent = {"featureId": feature_id, "productId": product_id}
        return pbx.post(pbx.lic_path("captureFeatureForProductId"), json=sent), sent
    sent = {"licFeatureId": feature_id, "licProductId": product_id}
    return pbx.post(pbx.lic_path("captureFeatureForProductId"), data=sent), sent


@pytest.mark.parametrize("gen", GENS)
def test_capture_feature_falls_back_to_a_trial(fleet, gen):
    """§5.2 captureFeatureForProductId: capture fails -> add a trial of the product and retry; the key then shows
    the product as a trial with an expiry date.  When even the retry fails (a product with no trial) the answer is
    a licence failure in messages.license (v3 422, legacy 200 false)."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company()
    apply_key(pbx, key)
    resp, sent = capture(pbx, 203, 103)
    data = expect(resp, 200, "§5.2 capture via trial", sent)
    assert data["result"] is True, describe(resp, sent)
    fleet.control.advance(125)  # past the licence-info cache
    prods = {p["@attributes"]["name"]: p["@attributes"] for p in as_list(decoded_info(pbx)["product"])}
    trials = [a for n, a in prods.items() if n != "MikoPBX" and a["trial"] == "1" and a["expired"]]
    assert trials, f"no trial product with an expiry after capture: {prods}"
    resp, sent = capture(pbx, 999, 999)
    data = expect(resp, 422 if gen == "v3" else 200, "§5.2 capture failure after the trial retry", sent)
    assert data["result"] is False and messages_of(data, "license"), describe(resp, sent)


def test_legacy_passes_raw_errors_v3_translates(fleet):
    """§5.2: v3 puts the *translated* error in messages.license; legacy translates only errors containing 2026
    (lic_FailedCheckLicense2026) and passes any other error string raw -- so for 2026 both generations read the
    same, for 2008 (no free seat) they differ."""
    holder, v3, legacy = take(fleet, "v3"), take(fleet, "v3"), take(fleet, "legacy")
    unknown = {"licKey": random_key()}
    m2026 = {
        p.generation: messages_of(licence_failure(p, p.lic_request(unknown), 400, "§5.2 2026", unknown), "license")
        for p in (v3, legacy)
    }
    assert m2026["v3"] == m2026["legacy"], m2026
    full = fleet.control.create_company(seats=1)
    apply_key(holder, full)
    sent = {"licKey": full}
    m2008 = {
        p.generation: messages_of(licence_failure(p, p.lic_request(sent), 400, "§5.2 2008", sent), "license")
        for p in (v3, legacy)
    }
    assert m2008["v3"] != m2008["legacy"], f"legacy must carry the raw library error for 2008 (§5.2): {m2008}"


# ------------------------------------------------------------------------------------------ key-format quirks


@pytest.mark.parametrize("gen", GENS)
def test_lower_case_key_becomes_a_trial_attempt(fleet, gen):
    """§5.2 step 2 / §5.5: the server only checks length 28 and the prefix "MIKO-" -- a lower-case key fails the
    prefix check and silently becomes a trial registration, which without company data fails as a trial (v3 502,
    not the invalid-key 400); nothing stored."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company()
    sent = {"licKey": key.lower()}
    licence_failure(pbx, pbx.lic_request(sent), 502, "§5.2 trial failure (not a key check)", sent)
    assert fleet.control.license_key(pbx.name) == ""


@pytest.mark.parametrize("gen", GENS)
def test_pattern_not_enforced_beyond_prefix_and_length(fleet, gen):
    """§5.5: the documented pattern ^MIKO-[A-Z0-9]{5}(-…){3}$ is not enforced -- 28 chars with the MIKO- prefix but
    lower-case groups are sent to the licence server as a key: unknown key 2026 (v3 400, legacy 200 false)."""
    pbx = take(fleet, gen)
    sent = {"licKey": "MIKO-" + random_key()[5:].lower()}
    licence_failure(pbx, pbx.lic_request(sent), 400, "§5.2 key check (2026)", sent)
    assert fleet.control.license_key(pbx.name) == ""


@pytest.mark.parametrize("gen", GENS)
def test_trial_on_a_pbx_with_a_key_replaces_it(fleet, gen):
    """§5.2 step 2 (FC-02): the PBX does not refuse company details when it already holds a key -- the trial
    registration runs and stores the newly issued key over the old one (why the collection must refuse locally)."""
    pbx = take(fleet, gen)
    key = fleet.control.create_company()
    apply_key(pbx, key)
    sent = trial_fields()
    resp = pbx.lic_request(sent)
    data = expect(resp, 200, "§5.2 trial on a keyed PBX", sent)
    assert data["result"] is True and data["data"]["PBXLicense"] != key, describe(resp, sent)
    assert fleet.control.license_key(pbx.name) == data["data"]["PBXLicense"]


def test_v3_capture_accepts_lic_prefixed_ids(fleet):
    """§5.1: v3 captureFeatureForProductId takes featureId/licFeatureId and productId/licProductId alike."""
    pbx = take(fleet, "v3")
    key = fleet.control.create_company()
    apply_key(pbx, key)
    sent = {"licFeatureId": 204, "licProductId": 104}
    resp = pbx.post(pbx.lic_path("captureFeatureForProductId"), json=sent)
    data = expect(resp, 200, "§5.1 lic-prefixed ids", sent)
    assert data["result"] is True, describe(resp, sent)


@pytest.mark.parametrize("gen", GENS)
def test_license_info_single_child_is_object_several_are_array(fleet, gen):
    """§5.4: licenseInfo is json_encode(SimpleXMLElement): an element that occurs once is an *object*, several
    times an *array*; every attribute value is a string."""
    one, two = take(fleet, gen), take(fleet, gen)
    apply_key(one, fleet.control.create_company())
    info = decoded_info(one)
    assert isinstance(info["product"], dict) and isinstance(info["product"]["feature"], dict), info
    key = fleet.control.create_company(products=[
        {"id": 104, "name": "Queue call back", "expired": "2099-01-01", "trial": False,
         "features": [{"id": 204, "name": "Callback A", "count": 2}, {"id": 205, "name": "Callback B", "count": 1}]},
    ])  # fmt: skip
    apply_key(two, key)
    info = decoded_info(two)
    assert isinstance(info["product"], list) and len(info["product"]) == 2, info
    qcb = next(p for p in info["product"] if p["@attributes"]["name"] == "Queue call back")
    assert isinstance(qcb["feature"], list) and len(qcb["feature"]) == 2, qcb

    def strings(node):
        if isinstance(node, dict):
            return all(strings(v) for v in node.values())
        if isinstance(node, list):
            return all(strings(v) for v in node)
        return isinstance(node, str)

    assert strings(info), f"every attribute value must be a string (§5.4): {info}"


@pytest.mark.parametrize("gen", GENS)
def test_enable_after_capture_succeeds_then_expiry_switches_it_off(fleet, gen):
    """§7.4 / §5.7: with the feature captured, enabling a licensed module succeeds (disabled '0'); once the product
    has expired the hourly check switches it off with DisabledByLicense and a reason text."""
    import datetime as dt

    pbx = take(fleet, gen)
    now = dt.datetime.fromisoformat(
        expect(pbx.get(pbx.lic_path("ping")), 200, "§5.2 ping")["meta"]["timestamp"]
    )  # the PBX's own (emulated) date
    soon = (now + dt.timedelta(days=2)).strftime("%Y-%m-%d")
    key = fleet.control.create_company(products=[
        {"id": 102, "name": "Bitrix24 integration", "expired": soon, "trial": False,
         "features": [{"id": 202, "name": "Bitrix24 integration", "count": 3}]},
    ])  # fmt: skip
    apply_key(pbx, key)
    resp, sent = capture(pbx, 202, 102)
    assert expect(resp, 200, "§5.2 capture", sent)["result"] is True, describe(resp, sent)
    fleet.control.set_modules(
        pbx.name,
        [
            module_row(
                "ModuleBitrix24Integration",
                disabled=True,
                reason="DisabledByLicense",
                text="old",
                feature=202,
                product=102,
            )
        ],
    )
    resp = pbx.module_enable("ModuleBitrix24Integration")
    data = expect(resp, 200, "§7.2/§7.3 enable with a licence")
    assert data["result"] is True, describe(resp)
    assert str(fleet.control.modules(pbx.name)["ModuleBitrix24Integration"]["disabled"]) == "0"
    fleet.control.advance(4 * 86400)
    fleet.control.license_check(pbx.name)
    row = fleet.control.modules(pbx.name)["ModuleBitrix24Integration"]
    assert str(row["disabled"]) == "1" and row["disableReason"] == "DisabledByLicense", row
    assert row["disableReasonText"] and row["disableReasonText"] != "old", row


@pytest.mark.parametrize("gen", GENS)
def test_licence_info_cache_is_per_pbx(fleet, gen):
    """§5.2: the 120 s getLicenseInfo cache lives in each PBX's own Redis -- one PBX's cached answer for key K says
    nothing about another PBX with K: after the cabinet frees the second machine's seat, the second PBX fails at
    once while the first still answers from its cache."""
    a, b = take(fleet, gen), take(fleet, gen)
    key = fleet.control.create_company()
    apply_key(a, key)
    apply_key(b, key)
    decoded_info(a)
    fleet.control.free_seat(key, fleet.control.machine_id(b.name))
    info_failure(b, b.lic_info(), "design 2008 (no cache on this PBX)")
    decoded_info(a)
