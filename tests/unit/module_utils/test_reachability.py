"""The PBX-side probe: command shape, input validation, output parsing, and the script itself.

The last group runs the constant probe script with this machine's ``sh`` and ``curl`` against
local servers, so the stage mapping is checked against what curl really prints, not only against
hand-written lines.
"""

from __future__ import annotations

import datetime as dt
import http.server
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from ansible_collections.mikopbx.marketplace.plugins.module_utils import reachability as r

# ---------------------------------------------------------------------------------------------
# command builder


def test_command_has_the_documented_shape():
    command, hosts, port, timeout = r.build_probe_command(["lic.miko.ru", "lic.mikopbx.com"], 443, 10)

    argv = shlex.split(command)
    assert argv[:2] == ["sh", "-c"]
    assert argv[2] == r.PROBE_SCRIPT
    assert argv[3:] == ["mikopbx-probe-v1", "443", "10", "lic.miko.ru", "lic.mikopbx.com"]
    assert command.startswith("sh -c '")
    assert command.endswith("' mikopbx-probe-v1 443 10 lic.miko.ru lic.mikopbx.com")
    assert (hosts, port, timeout) == (["lic.miko.ru", "lic.mikopbx.com"], 443, 10)


def test_default_hosts():
    _command, hosts, port, timeout = r.build_probe_command()
    assert hosts == ["lic.miko.ru", "lic.mikopbx.com"]
    assert (port, timeout) == (443, 10)


def test_script_is_constant_and_single_quote_free():
    assert "'" not in r.PROBE_SCRIPT
    one = r.build_probe_command(["a.example"], 443, 5)[0]
    two = r.build_probe_command(["b.example", "c.example"], 8443, 7)[0]
    assert shlex.split(one)[2] == shlex.split(two)[2] == r.PROBE_SCRIPT


def test_hosts_are_normalised_and_deduplicated():
    _c, hosts, _p, _t = r.build_probe_command(["LIC.MikoPBX.com.", "lic.mikopbx.com", " lic.miko.ru "])
    assert hosts == ["lic.mikopbx.com", "lic.miko.ru"]


@pytest.mark.parametrize(
    "host",
    [
        "lic.miko.ru; rm -rf /",
        "$(id)",
        "`id`",
        "lic.miko.ru lic.mikopbx.com",
        "-k",
        "--insecure",
        "https://lic.mikopbx.com",
        "lic.mikopbx.com:443",
        "a'b",
        "bad_host.example",
        "",
        "-lead.example",
        "trail-.example",
        "a" * 64 + ".example",
        "x." * 130 + "com",
        "host\nname",
        None,
        42,
    ],
)
def test_hosts_that_are_not_dns_names_are_rejected(host):
    with pytest.raises(r.ProbeInputError):
        r.build_probe_command([host])


@pytest.mark.parametrize("port", [0, 65536, "443; id", "abc", -1, True, 4.5, "", None])
def test_bad_port_is_rejected(port):
    with pytest.raises(r.ProbeInputError, match="port"):
        r.build_probe_command(["lic.mikopbx.com"], port, 5)


@pytest.mark.parametrize("timeout", [0, 21, "5s", "$(id)", False])
def test_bad_timeout_is_rejected(timeout):
    with pytest.raises(r.ProbeInputError, match="probe_timeout"):
        r.build_probe_command(["lic.mikopbx.com"], 443, timeout)


def test_numeric_strings_are_accepted():
    command, _h, port, timeout = r.build_probe_command(["lic.mikopbx.com"], "8443", " 7 ")
    assert (port, timeout) == (8443, 7)
    assert shlex.split(command)[4:6] == ["8443", "7"]


def test_empty_and_oversized_host_lists_are_rejected():
    with pytest.raises(r.ProbeInputError, match="at least one"):
        r.build_probe_command([])
    with pytest.raises(r.ProbeInputError, match="at most"):
        r.build_probe_command(["h%d.example" % i for i in range(11)])


def test_command_timeout_stays_under_the_v3_worker_wait():
    # Hosts run in parallel: the command takes one host's time (connect + 5 s HTTP grace).
    assert r.command_timeout(10) == 18
    assert r.command_timeout(r.MAX_TIMEOUT) < 30


# ---------------------------------------------------------------------------------------------
# output parser


def line(host, code, http="000", error=""):
    return "MIKOPBX-PROBE\t%s\t%s\t%s\t%s" % (host, code, http, error)


@pytest.mark.parametrize(
    "code,http,error,stage,intercepted",
    [
        (0, "200", "", None, False),
        (0, "404", "", None, False),
        (0, "503", "", "http", False),
        (6, "000", "curl: (6) Could not resolve host: lic.miko.ru", "dns", False),
        (7, "000", "curl: (7) Failed to connect to lic.miko.ru port 443 after 3 ms: Couldn't connect", "tcp", False),
        (28, "000", "curl: (28) Connection timed out after 10001 milliseconds", "tcp", False),
        (28, "000", "curl: (28) Failed to connect to x port 443 after 10000 ms: Timeout was reached", "tcp", False),
        (28, "000", "curl: (28) Resolving timed out after 10000 milliseconds", "dns", False),
        (28, "000", "curl: (28) SSL connection timeout", "tls", False),
        (28, "000", "curl: (28) Operation timed out after 20001 milliseconds with 0 bytes received", "http", False),
        (28, "200", "curl: (28) Operation timed out", "http", False),
        (28, "000", "", "tcp", False),
        (35, "000", "curl: (35) OpenSSL SSL_connect: SSL_ERROR_SYSCALL", "tls", False),
        (60, "000", "curl: (60) SSL certificate problem: self-signed certificate in certificate chain", "tls", True),
        (51, "000", "curl: (51) SSL: no alternative certificate subject name matches", "tls", False),
        (58, "000", "", "tls", False),
        (59, "000", "", "tls", False),
        (77, "000", "", "tls", False),
        (83, "000", "", "tls", False),
        (90, "000", "", "tls", False),
        (91, "000", "", "tls", False),
        (52, "000", "curl: (52) Empty reply from server", "http", False),
        (56, "000", "curl: (56) Recv failure: Connection reset by peer", "http", False),
        (127, "000", "sh: curl: not found", "probe", False),
        (99, "000", "", "probe", False),
    ],
)
def test_exit_codes_map_to_the_first_failing_stage(code, http, error, stage, intercepted):
    [result] = r.parse_probe_output(line("lic.miko.ru", code, http, error), ["lic.miko.ru"])
    assert result["failed_stage"] == stage
    assert result["ok"] is (stage is None)
    assert result["intercepted"] is intercepted
    assert result["curl_exit"] == code
    if error.startswith("curl: ("):
        assert "curl: (" not in result["detail"]
        assert error.split(") ", 1)[1] in result["detail"]


def test_interception_is_named_in_the_detail():
    [result] = r.parse_probe_output(line("lic.mikopbx.com", 60, "000", "curl: (60) x"), ["lic.mikopbx.com"])
    assert "certificate not trusted: TLS interception or unverified chain" in result["detail"]


def test_per_host_results_in_requested_order_and_noise_ignored():
    output = "\n".join(
        [
            "some banner",
            line("lic.mikopbx.com", 0, "200"),
            "MIKOPBX-PROBE garbage without tabs",
            line("lic.miko.ru", 7, "000", "curl: (7) refused"),
            "",
        ]
    )
    results = r.parse_probe_output(output, ["lic.miko.ru", "lic.mikopbx.com", "third.example"])
    assert [x["host"] for x in results] == ["lic.miko.ru", "lic.mikopbx.com", "third.example"]
    assert [x["failed_stage"] for x in results] == ["tcp", None, "probe"]
    assert "no result" in results[2]["detail"]


def test_error_with_tabs_and_crlf_does_not_break_the_line():
    raw = "MIKOPBX-PROBE\tlic.miko.ru\t6\t000\tcurl: (6) a\tb\r\n"
    [result] = r.parse_probe_output(raw, ["lic.miko.ru"])
    assert result["failed_stage"] == "dns"
    assert "a\tb" in result["detail"]


def test_unreadable_exit_code():
    [result] = r.parse_probe_output("MIKOPBX-PROBE\tlic.miko.ru\tx\t000\t", ["lic.miko.ru"])
    assert result["ok"] is False and result["failed_stage"] == "probe"


def test_empty_output():
    assert [x["ok"] for x in r.parse_probe_output("", ["a.example"])] == [False]
    assert [x["ok"] for x in r.parse_probe_output(None, ["a.example"])] == [False]


def test_first_failure_and_summary():
    ok = r.parse_probe_output(line("a.example", 0, "200"), ["a.example"])
    bad = r.parse_probe_output(line("b.example", 6), ["b.example"])
    ping_ok = {"ok": True, "detail": "x"}
    ping_bad = {"ok": False, "detail": "no answer"}

    assert r.first_failure(ok + bad) == {"host": "b.example", "stage": "dns", "detail": bad[0]["detail"]}
    assert r.first_failure(ok, ping_bad) == {"host": None, "stage": "license_ping", "detail": "no answer"}
    assert r.first_failure(ok, ping_ok) is None
    assert r.first_failure(ok, None) is None

    assert r.summarise(ok, ping_ok)[0] is True
    assert r.summarise(ok, None)[0] is True
    reachable, msg = r.summarise(ok + bad, ping_ok)
    assert reachable is False and "b.example: dns stage failed" in msg
    assert r.summarise(ok, ping_bad)[0] is False
    assert r.summarise([], ping_ok) == (True, "the PBX's licence ping succeeded")
    assert r.summarise([], ping_bad)[0] is False
    assert r.summarise([], None)[0] is False


# ---------------------------------------------------------------------------------------------
# The real script, real curl, local servers

needs_tools = pytest.mark.skipif(
    shutil.which("sh") is None or shutil.which("curl") is None, reason="needs sh and curl on this machine"
)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for localhost signed by it (files: ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(self.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class _Stalling(_Handler):
    def do_GET(self):  # noqa: N802
        threading.Event().wait(10)


def _tls_server(tmp_path: Path, handler) -> tuple[http.server.ThreadingHTTPServer, Path]:
    ca, cert, key = _certificates(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, ca


def _run(hosts, port, timeout=2, ca=None) -> list[dict]:
    command, names, _p, _t = r.build_probe_command(hosts, port, timeout)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    if ca is not None:
        env["CURL_CA_BUNDLE"] = str(ca)
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, timeout=60, check=False)
    lines = [x for x in done.stdout.splitlines() if x]
    assert len(lines) == len(names), done.stdout + done.stderr
    assert all(x.count("\t") == 4 for x in lines)
    return r.parse_probe_output(done.stdout, names)


@needs_tools
def test_script_dns_failure_and_refused_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    results = _run(["no-such-host.invalid", "localhost"], closed)
    assert [x["failed_stage"] for x in results] == ["dns", "tcp"]
    # A resolver that does not answer at all gives a resolving timeout (28) instead of 6.
    assert results[0]["curl_exit"] in (6, 28) and results[1]["curl_exit"] == 7


@needs_tools
def test_script_untrusted_certificate_is_tls_interception(tmp_path):
    server, _ca = _tls_server(tmp_path, _Handler)
    try:
        [result] = _run(["localhost"], server.server_address[1])
    finally:
        server.shutdown()
    assert result["failed_stage"] == "tls"
    assert result["intercepted"] is True
    assert result["curl_exit"] == 60


@needs_tools
def test_script_trusted_certificate_is_ok_and_5xx_is_http(tmp_path):
    server, ca = _tls_server(tmp_path, _Handler)
    try:
        [result] = _run(["localhost"], server.server_address[1], ca=ca)
        assert result["ok"] is True and result["http_status"] == "200"

        _Handler.status = 502
        [result] = _run(["localhost"], server.server_address[1], ca=ca)
        assert result["failed_stage"] == "http" and "502" in result["detail"]
    finally:
        _Handler.status = 200
        server.shutdown()


@needs_tools
def test_script_tls_handshake_stall_is_tls_stage():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    try:
        [result] = _run(["localhost"], listener.getsockname()[1], timeout=1)
    finally:
        listener.close()
    assert result["curl_exit"] == 28
    assert result["failed_stage"] == "tls"


@needs_tools
def test_script_no_http_answer_is_http_stage(tmp_path):
    server, ca = _tls_server(tmp_path, _Stalling)
    try:
        [result] = _run(["localhost"], server.server_address[1], timeout=1, ca=ca)
    finally:
        server.shutdown()
    assert result["curl_exit"] == 28
    assert result["failed_stage"] == "http"


@needs_tools
def test_script_runs_nothing_from_a_host_value(tmp_path):
    """Even if validation were bypassed, a host is data for curl, never shell text."""
    marker = tmp_path / "pwned"
    command = " ".join(
        shlex.quote(a) for a in ["sh", "-c", r.PROBE_SCRIPT, r.PROBE_MARKER, "1", "1", "$(touch %s)" % marker]
    )
    subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False)
    assert not marker.exists()


def test_fc14b_icmp_plays_no_part_so_blocked_ping_is_not_a_failure():
    """FC-14 (b): a PBX whose firewall drops ICMP but allows TCP 443 must not be reported as failing.

    The probe reaches every licensing host with one HTTPS request (curl) and nothing else: no ICMP
    tool appears in the fixed script, and a host answering over 443 is ok whatever ICMP does.
    """
    words = set(shlex.split(r.PROBE_SCRIPT.replace(";", " ").replace("(", " ").replace(")", " ")))
    assert not words & {"ping", "ping6", "fping", "traceroute", "mtr"}
    assert "curl" in words

    output = "MIKOPBX-PROBE\tlic.mikopbx.com\t0\t200\t\n"
    (result,) = r.parse_probe_output(output, ["lic.mikopbx.com"])

    assert result["ok"] is True
    assert result["failed_stage"] is None
