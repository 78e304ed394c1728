"""Emulator CA and one certificate per PBX (EC P-256: generation and handshakes are cheap)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .util import atomic_write_bytes

_VALID_DAYS = 3650


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "MikoPBX emulator"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class CertificateAuthority:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_path = directory / "ca.pem"
        self._ca_key_path = directory / "ca.key"
        self._key: ec.EllipticCurvePrivateKey
        self._cert: x509.Certificate
        self._load_or_create()

    def _load_or_create(self) -> None:
        if self.ca_path.exists() and self._ca_key_path.exists():
            self._cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
            key = serialization.load_pem_private_key(self._ca_key_path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._key = key
            return
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = _name("MikoPBX emulator CA")
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        atomic_write_bytes(self._ca_key_path, _pem_key(self._key))
        atomic_write_bytes(self.ca_path, self._cert.public_bytes(serialization.Encoding.PEM))

    def _server_key(self) -> ec.EllipticCurvePrivateKey:
        if getattr(self, "_skey", None) is None:
            path = self.directory / "server.key"
            if path.exists():
                k = serialization.load_pem_private_key(path.read_bytes(), password=None)
                assert isinstance(k, ec.EllipticCurvePrivateKey)
                self._skey = k
            else:
                self._skey = ec.generate_private_key(ec.SECP256R1())
                atomic_write_bytes(path, _pem_key(self._skey))
        return self._skey

    def server_pem(self, name: str) -> Path:
        """Path of a PEM holding key + certificate for PBX ``name`` (created once, then reused)."""
        path = self.directory / "certs" / f"{name}.pem"
        if path.exists():
            return path
        # one server key pair for every PBX (each still gets its own certificate and names): key
        # generation is the larger part of the cost at fleet start
        key = self._server_key()
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=_VALID_DAYS - 2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("localhost"),
                        x509.DNSName(name),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        atomic_write_bytes(path, _pem_key(key) + cert.public_bytes(serialization.Encoding.PEM), fsync=False)
        return path


def server_context(pem: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # the 2026 nginx offers TLS 1.2/1.3
    ctx.load_cert_chain(str(pem))
    return ctx
