"""Each emulator fault (design.md §2 "Faults") produces the reference's answer for each generation.

Reference sections: §4 (status mapping: worker timeout 400/500, database locked 422, queue full 503, nginx
plain-text 429), §5.2 (licence errors: library code 0 -> 503, >= 500 -> 502 on v3; legacy always 200 +
result false), design.md §5 (the reachability probe's curl exit codes 6 / 28 / 60).
"""

from __future__ import annotations

import time

import pytest
from fidelity_helpers import (
    LEGACY_500,
    QUEUE_FULL,
    WORKER_TIMEOUT_V3,
    body,
    describe,
    expect,
    fleet_fixture,
    messages_of,
    parse_probe,
    probe_command,
    random_key,
)

GENS = ["v3", "legacy"]
SCALE = 0.05  # worker waits (30 s v3 / 10 s legacy) become 1.5 s / 0.5 s: tight enough to be quick, loose
# enough that a loaded CI machine does not turn an ordinary call into a spurious worker timeout

fleet = fleet_fixture(count=80, generation="mixed", time_scale=SCALE, rate_limit=False)


def take(fv, gen):
    used = getattr(fv, "_used", set())
    fv._used = used
    for n in fv.names(gen):
        if n not in used:
            used.add(n)
            return fv.pbx(n)
    raise AssertionError(f"faults fleet too small: no unused {gen} PBX")


@pytest.fixture
def clean(fleet):
    """Clears every fault (per PBX and fleet-wide) after the test, whatever happened."""
    yield fleet
    for name in fleet.names():
        fleet.control.clear_faults(name)
    fleet.control.clear_faults(None)


def fresh_session(pbx):
    """An authenticated session established *before* a fault is injected (so login never consumes it)."""
    if pbx.generation == "v3":
        return pbx.bearer()
    return pbx.legacy_session()


def ping(pbx, s):
    """A cheap authenticated API call that never fails on its own: license sendPBXMetrics (§5.2)."""
    return s.get(pbx.url + pbx.lic_path("sendPBXMetrics"), timeout=60)


def new_key_request(fv, pbx, s):
    key = fv.control.create_company()
    sent = {"licKey": key}
    url = pbx.url + pbx.lic_path("processUserRequest")
    resp = s.post(url, json=sent, timeout=60) if pbx.generation == "v3" else s.post(url, data=sent, timeout=60)
    return resp, sent


def assert_licence_fault(fv, pbx, resp, sent, v3_statuses, ref):
    if pbx.generation == "v3":
        assert resp.status_code in v3_statuses, f"expected HTTP {v3_statuses} per {ref}; got {describe(resp, sent)}"
        data = body(resp)
        assert data.get("httpCode") == resp.status_code, describe(resp, sent)
    else:
        data = expect(resp, 200, f"{ref} (legacy: always 200)", sent)
    assert data["result"] is False and messages_of(data, "license"), describe(resp, sent)
    assert fv.control.license_key(pbx.name) == "", "nothing may be stored when the licence call failed (§5.2)"


# ------------------------------------------------------------------------------------------ licensing faults


@pytest.mark.parametrize("gen", GENS)
def test_licensing_down(clean, gen):
    """§5.2: local licence service silent (library code 0) -> v3 503 + messages.license; legacy 200 result false."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "licensing_down")
    resp, sent = new_key_request(fv, pbx, s)
    assert_licence_fault(fv, pbx, resp, sent, (503,), "§5.2 code 0 -> 503")


@pytest.mark.parametrize("gen", GENS)
def test_licensing_5xx(clean, gen):
    """§5.2: licence server answers 5xx -> v3 502; legacy 200 result false."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "licensing_5xx")
    resp, sent = new_key_request(fv, pbx, s)
    assert_licence_fault(fv, pbx, resp, sent, (502,), "§5.2 code >= 500 -> 502")


@pytest.mark.parametrize("fault", ["egress_blocked", "dns_failure", "tls_intercept"])
@pytest.mark.parametrize("gen", GENS)
def test_network_faults_fail_licence_calls(clean, gen, fault):
    """design §2 faults + §5.2: with the licensing hosts blocked / unresolvable / intercepted, applying a key fails
    as a connectivity failure (v3 503 or 502, legacy 200 result false); nothing stored."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, fault)
    resp, sent = new_key_request(fv, pbx, s)
    assert_licence_fault(fv, pbx, resp, sent, (502, 503), f"§5.2 ({fault})")


@pytest.mark.parametrize("gen", GENS)
def test_licensing_down_ping_fails(clean, gen):
    """§5.2 ping: 3 tries with 3 s pauses, all fail -> result false (v3 422, legacy 200) after >= 6 s."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "licensing_down")
    t0 = time.monotonic()
    resp = s.get(pbx.url + pbx.lic_path("ping"), timeout=60)
    elapsed = time.monotonic() - t0
    data = expect(resp, 422 if gen == "v3" else 200, "§5.1 ping failure")
    assert data["result"] is False, describe(resp)
    assert elapsed >= 6 * SCALE * 0.9, (
        f"3 tries with 3 s pauses take >= 6 s (§5.2); answered after {elapsed / SCALE:.1f} s"
    )


@pytest.mark.parametrize("gen", GENS)
def test_licensing_down_license_info(clean, gen):
    """§5.2 getLicenseInfo with the service silent (nothing cached): v3 422 with a plain-list message; legacy 200,
    result false."""
    fv = clean
    pbx = take(fv, gen)
    key = fv.control.create_company()
    fv.control.set_license_key(pbx.name, key, bind=True)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "licensing_down")
    resp = s.get(pbx.url + pbx.lic_path("getLicenseInfo"), timeout=60)
    if gen == "v3":
        data = expect(resp, 422, "§5.2 v3 getLicenseInfo failure")
        assert isinstance(data["messages"], list) and data["messages"], describe(resp)
    else:
        data = expect(resp, 200, "§5.2 legacy getLicenseInfo failure")
    assert data["result"] is False, describe(resp)


@pytest.mark.parametrize("gen", GENS)
def test_licensing_slow_within_and_beyond_worker_wait(clean, gen):
    """§4 / §9: a slow licence call delays the answer; beyond the worker wait (v3 30 s, legacy 10 s) the client
    gets the generation's timeout (v3 400 "Request timeout or worker not responding", legacy 500)."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "licensing_slow", delay=2)
    t0 = time.monotonic()
    resp, sent = new_key_request(fv, pbx, s)
    elapsed = time.monotonic() - t0
    data = expect(resp, 200, "§5.2 slow but within the wait", sent)
    assert data["result"] is True, describe(resp, sent)
    assert elapsed >= 2 * SCALE * 0.9, f"licensing_slow delay=2 answered after {elapsed:.3f}s real"
    fv.control.clear_faults(pbx.name)
    other = take(fv, gen)
    s = fresh_session(other)
    fv.control.add_fault(other.name, "licensing_slow", delay=60)
    resp, sent = new_key_request(fv, other, s)
    if gen == "v3":
        data = expect(resp, 400, "§4 worker wait exceeded (v3)", sent)
        assert data["messages"]["error"] == [WORKER_TIMEOUT_V3], describe(resp, sent)
    else:
        data = expect(resp, 500, "§4 worker wait exceeded (legacy)", sent)
        assert data["errors"] == [LEGACY_500], describe(resp, sent)


# ------------------------------------------------------------------------------------------ API-level faults


@pytest.mark.parametrize("gen", GENS)
def test_worker_timeout(clean, gen):
    """§4 / §11.8: worker did not answer -> v3 400 {result false, messages.error ["Request timeout or worker not
    responding"], function "", processor ""}; legacy 500 {"errors":["500 (Internal Server Error) "]}; `count`
    calls only."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "worker_timeout", count=2)
    for _n in range(2):
        resp = ping(pbx, s)
        if gen == "v3":
            data = expect(resp, 400, "§4 v3 worker timeout")
            assert data["result"] is False and data["messages"]["error"] == [WORKER_TIMEOUT_V3], describe(resp)
            assert data["function"] == "" and data["processor"] == "" and "meta" in data, describe(resp)
        else:
            data = expect(resp, 500, "§4 legacy worker timeout")
            assert data["errors"] == [LEGACY_500] and data["jsonapi"] == {"version": "1.0"}, describe(resp)
    expect(ping(pbx, s), 200, "fault count exhausted -> normal answer")


@pytest.mark.parametrize("gen", GENS)
def test_db_locked(clean, gen):
    """§4 / §9: 'database is locked' after the worker's retries -> v3 422 result false with the text in
    messages.error; legacy HTTP 200 result false."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "db_locked", count=1)
    resp = ping(pbx, s)
    data = expect(resp, 422 if gen == "v3" else 200, "§4 database is locked")
    assert data["result"] is False, describe(resp)
    assert any("database is locked" in m for m in messages_of(data, "error")), describe(resp)
    expect(ping(pbx, s), 200, "fault count exhausted")


def test_queue_full_v3(clean):
    """§4 / §9: queue longer than APIQueueMaxLength -> v3 503 messages.error ["Service temporarily unavailable,
    please retry later"]."""
    fv = clean
    pbx = take(fv, "v3")
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "queue_full", count=1)
    resp = ping(pbx, s)
    data = expect(resp, 503, "§4 queue full")
    assert data["result"] is False and data["messages"]["error"] == [QUEUE_FULL], describe(resp)
    expect(ping(pbx, s), 200, "fault count exhausted")


def test_rate_limit_v3_plain_text_429(clean):
    """§4 / §9: nginx Lua rate limit -> 429 with the plain text "Too many requests" (not JSON)."""
    fv = clean
    pbx = take(fv, "v3")
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "rate_limit", count=1)
    resp = ping(pbx, s)
    assert resp.status_code == 429, describe(resp)
    assert resp.text.strip() == "Too many requests" and body(resp) is None, describe(resp)
    assert not resp.headers.get("Content-Type", "").startswith("application/json"), dict(resp.headers)
    expect(ping(pbx, s), 200, "fault count exhausted")


def test_rate_limit_hits_login_too(clean):
    """§9: the nginx limit applies to every /pbxcore/api/* request, including auth:login (plain-text 429)."""
    fv = clean
    pbx = take(fv, "v3")
    fv.control.add_fault(pbx.name, "rate_limit", count=1)
    resp = pbx.v3_login()
    assert resp.status_code == 429 and resp.text.strip() == "Too many requests", describe(resp)
    expect(pbx.v3_login(), 200, "fault count exhausted")


def test_fleet_wide_fault_and_isolation(clean):
    """design §2: a PBX fault touches only that PBX; a fleet-wide fault (/control/faults) every PBX; clearing
    restores normal answers; the state shows the active faults."""
    fv = clean
    a, b = take(fv, "v3"), take(fv, "legacy")
    sa, sb = fresh_session(a), fresh_session(b)
    fv.control.add_fault(a.name, "licensing_down")
    assert fv.control.state(a.name)["faults"], "active fault not visible in the PBX state"
    expect(sb.get(b.url + b.lic_path("ping"), timeout=60), 200, "other PBX unaffected")
    assert body(sb.get(b.url + b.lic_path("ping"), timeout=60))["result"] is True
    fv.control.clear_faults(a.name)
    fv.control.add_fault(None, "licensing_down")
    ra = sa.get(a.url + a.lic_path("ping"), timeout=60)
    rb = sb.get(b.url + b.lic_path("ping"), timeout=60)
    assert ra.status_code == 422 and body(ra)["result"] is False, describe(ra)
    assert rb.status_code == 200 and body(rb)["result"] is False, describe(rb)
    fv.control.clear_faults(None)
    assert body(sa.get(a.url + a.lic_path("ping"), timeout=60))["result"] is True


# ------------------------------------------------------------------------------------------ probe faults


PROBE_HOSTS = ("lic.mikopbx.com", "releases.mikopbx.com")


def run_probe(pbx, hosts=PROBE_HOSTS):
    cmd = probe_command(hosts, 443, 5)
    resp = pbx.bash(cmd)
    data = expect(resp, 200, "design §5 probe", cmd)
    assert data["result"] is True, describe(resp)
    rows = parse_probe(data["data"]["output"])
    assert set(rows) == set(hosts), data["data"]["output"]
    return rows


@pytest.mark.parametrize(("fault", "code"), [("dns_failure", "6"), ("egress_blocked", "28"), ("tls_intercept", "60")])
def test_probe_reports_curl_exit_code_per_host(clean, fault, code):
    """design §5: dns_failure -> curl exit 6, egress_blocked -> 28 (no connection), tls_intercept -> 60; only the
    hosts named by the fault fail, the others answer (FC-14c per-host results)."""
    fv = clean
    pbx = take(fv, "v3")
    fv.control.add_fault(pbx.name, fault, hosts=["lic.mikopbx.com"])
    rows = run_probe(pbx)
    bad, good = rows["lic.mikopbx.com"], rows["releases.mikopbx.com"]
    assert bad["exit"] == code and bad["http"] == "000", rows
    assert bad["error"], f"curl error text expected for exit {code}: {rows}"
    assert good["exit"] == "0" and good["http"] != "000", rows


def test_probe_fault_without_hosts_hits_all_licensing_hosts(clean):
    """design §2: host faults default to all licensing hosts."""
    fv = clean
    pbx = take(fv, "v3")
    fv.control.add_fault(pbx.name, "dns_failure")
    rows = run_probe(pbx)
    assert all(r["exit"] == "6" for r in rows.values()), rows
    fv.control.clear_faults(pbx.name)
    rows = run_probe(pbx)
    assert all(r["exit"] == "0" for r in rows.values()), rows


def test_probe_unaffected_by_worker_faults_on_other_pbx(clean):
    """design §2: faults are per PBX -- another PBX's probe is clean."""
    fv = clean
    a, b = take(fv, "v3"), take(fv, "v3")
    fv.control.add_fault(a.name, "tls_intercept")
    assert all(r["exit"] == "0" for r in run_probe(b).values())
    assert all(r["exit"] == "60" for r in run_probe(a).values())


def test_probe_not_available_on_legacy(clean):
    """§6 / §12: no system:executeBashCommand on 2024 -> the v3 path 404s on a legacy PBX."""
    fv = clean
    pbx = take(fv, "legacy")
    resp = pbx.post(
        "/pbxcore/api/v3/system:executeBashCommand", json={"command": probe_command(PROBE_HOSTS), "timeout": 30}
    )
    expect(resp, 404, "§12 (no bash endpoint on legacy)")


def test_random_key_helper_is_well_formed():
    """helper sanity: generated keys have the 28-char MIKO- form the PBX checks (§5.5)."""
    key = random_key()
    assert len(key) == 28 and key.startswith("MIKO-")


# ------------------------------------------------------------------------------------------ timeouts and writes


@pytest.mark.parametrize("gen", GENS)
def test_timed_out_write_still_lands(clean, gen):
    """§7.2 / §9: when the client gets the worker timeout the worker keeps going -- a processUserRequest that timed
    out is applied anyway (why a client must re-read before retrying a write)."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "worker_timeout", count=1)
    resp, sent = new_key_request(fv, pbx, s)
    expect(resp, 400 if gen == "v3" else 500, "§4 worker timeout", sent)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and fv.control.license_key(pbx.name) != sent["licKey"]:
        time.sleep(0.05)
    assert fv.control.license_key(pbx.name) == sent["licKey"], "the timed-out write was not applied by the worker"


def marketplace_path(gen):
    return (
        "/pbxcore/api/v3/modules:getAvailableModules"
        if gen == "v3"
        else "/pbxcore/api/modules/core/getAvailableModules"
    )


@pytest.mark.parametrize("gen", GENS)
def test_releases_dns_failure_marketplace_failure(clean, gen):
    """§4 / §7.2 / §10: releases.mikopbx.com not resolvable (fails fast) -> the marketplace list fails with
    result false and a plain list of messages (v3 HTTP 422; legacy HTTP 200)."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "dns_failure", hosts=["releases.mikopbx.com"])
    resp = s.get(pbx.url + marketplace_path(gen), timeout=60)
    data = expect(resp, 422 if gen == "v3" else 200, "§4 marketplace failure")
    assert data["result"] is False and isinstance(data["messages"], list) and data["messages"], describe(resp)


@pytest.mark.parametrize("gen", GENS)
def test_releases_egress_blocked_exceeds_worker_wait(clean, gen):
    """§7.2 / §9 / §4: with the TCP stage to releases.mikopbx.com timing out, getAvailableModules makes 3 tries of
    15 s (2 s pauses) = 49 s, longer than the worker wait (v3 30 s, legacy 10 s) -> the client sees the
    generation's timeout: v3 400 "Request timeout or worker not responding", legacy 500."""
    fv = clean
    pbx = take(fv, gen)
    s = fresh_session(pbx)
    fv.control.add_fault(pbx.name, "egress_blocked", hosts=["releases.mikopbx.com"])
    resp = s.get(pbx.url + marketplace_path(gen), timeout=60)
    if gen == "v3":
        data = expect(resp, 400, "§4 v3 worker wait (30 s) < 3 x 15 s marketplace tries")
        assert data["messages"]["error"] == [WORKER_TIMEOUT_V3], describe(resp)
    else:
        data = expect(resp, 500, "§4 legacy worker wait (10 s) < 15 s marketplace try")
        assert data["errors"] == [LEGACY_500], describe(resp)


def test_probe_licensing_5xx_is_an_http_stage_failure(clean):
    """design §5: with the licensing servers answering 5xx the probe connects (curl exit 0) and reports the HTTP
    status >= 500 -- the 'http' stage, not dns/tcp/tls."""
    fv = clean
    pbx = take(fv, "v3")
    fv.control.add_fault(pbx.name, "licensing_5xx")
    rows = run_probe(pbx)
    assert all(r["exit"] == "0" and int(r["http"]) >= 500 for r in rows.values()), rows


# ------------------------------------------------------------------------------------------ worker pool


@pytest.mark.parametrize(("gen", "workers", "delay", "ok_status", "late_status"),
                         [("v3", 3, 20, 200, 400), ("legacy", 4, 6, 200, 500)])  # fmt: skip
def test_slow_licence_calls_occupy_the_worker_pool(clean, gen, workers, delay, ok_status, late_status):
    """§1 / §9: the API is served by a fixed worker pool (v3 3 workers, 30 s wait; legacy 4 workers, 10 s wait) and a
    slow licence call occupies a worker -- with 2 x workers concurrent slow pings, the first `workers` answer after
    one delay, the rest wait for a free worker and exceed the wait (v3 400 / legacy 500)."""
    import concurrent.futures

    fv = clean
    pbx = take(fv, gen)
    sessions = [fresh_session(pbx) for _n in range(2 * workers)]
    fv.control.add_fault(pbx.name, "licensing_slow", delay=delay)

    def call(s):
        return s.get(pbx.url + pbx.lic_path("ping"), timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(len(sessions)) as pool:
        codes = sorted(pool.map(call, sessions))
    assert codes.count(ok_status) == workers and codes.count(late_status) == workers, (
        f"{gen}: {2 * workers} concurrent slow ({delay} s) license pings -> {codes}; §9 expects {workers} x "
        f"{ok_status} and {workers} x {late_status} (pool of {workers})"
    )


def test_queue_back_pressure_503_beyond_50_waiting(clean):
    """§4 / §9: v3 queues requests for its 3 workers and answers 503 "Service temporarily unavailable, please retry
    later" once more than APIQueueMaxLength (50) wait -- 60 concurrent slow calls: 3 run, at most 50 queue, the
    rest are refused at once."""
    import concurrent.futures

    fv = clean
    pbx = take(fv, "v3")
    sessions = [fresh_session(pbx) for _n in range(60)]
    for s in sessions:  # open the keep-alive connections first so the burst arrives together
        s.get(pbx.url + pbx.lic_path("sendPBXMetrics"), timeout=60)
    fv.control.add_fault(pbx.name, "licensing_slow", delay=29)

    def call(s):
        resp = s.get(pbx.url + pbx.lic_path("ping"), timeout=60)
        return resp.status_code, body(resp)

    with concurrent.futures.ThreadPoolExecutor(len(sessions)) as pool:
        answers = list(pool.map(call, sessions))
    codes = sorted(c for c, _body in answers)
    assert codes.count(200) == 3, f"3 workers -> exactly 3 calls served within the wait: {codes}"
    refused = [b for c, b in answers if c == 503]
    assert refused, f"no 503 although 60 calls compete for 3 workers + a queue of 50: {codes}"
    assert all(b["messages"]["error"] == [QUEUE_FULL] for b in refused), refused[:2]


def test_worker_timeout_hits_v3_login_but_not_legacy_session_start(clean):
    """§1 / §3.1.1 / §11.1: v3 auth:login is a worker action (LoginAction::main, the controller hands the request to
    the worker), so a worker timeout answers the login with 400 "Request timeout or worker not responding"; the
    2024 login is the admin-cabinet form (no REST worker) and is not affected -- the next REST call is."""
    fv = clean
    v3, legacy = take(fv, "v3"), take(fv, "legacy")
    fv.control.add_fault(v3.name, "worker_timeout", count=1)
    resp = v3.v3_login()
    data = expect(resp, 400, "§4 worker timeout on auth:login")
    assert data["messages"]["error"] == [WORKER_TIMEOUT_V3], describe(resp)
    expect(v3.v3_login(), 200, "fault consumed")
    fv.control.add_fault(legacy.name, "worker_timeout", count=1)
    s = legacy.anon()
    data = expect(legacy.legacy_login(s), 200, "§3.2 session/start is not a REST worker call")
    assert data["success"] is True, data
    expect(ping(legacy, s), 500, "§4 the next REST call gets the legacy timeout")


def test_busy_workers_on_one_pbx_do_not_slow_another(clean):
    """§1 / §9: every PBX has its own worker pool -- while one v3 PBX's 3 workers are busy with slow licence calls,
    another PBX answers at once."""
    import concurrent.futures

    fv = clean
    busy, idle = take(fv, "v3"), take(fv, "v3")
    sessions = [fresh_session(busy) for _n in range(4)]
    fv.control.add_fault(busy.name, "licensing_slow", delay=25)
    s_idle = fresh_session(idle)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(lambda s: s.get(busy.url + busy.lic_path("ping"), timeout=60), s) for s in sessions]
        time.sleep(5 * SCALE)  # the slow calls now hold every worker of `busy`
        t0 = time.monotonic()
        resp = s_idle.get(idle.url + idle.lic_path("ping"), timeout=60)
        elapsed = time.monotonic() - t0
        for f in futures:
            f.result()
    expect(resp, 200, "§9 other PBX")
    assert elapsed < 15 * SCALE, f"the idle PBX took {elapsed / SCALE:.1f} emulated s while another PBX was busy"
