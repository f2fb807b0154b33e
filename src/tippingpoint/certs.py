"""Self-signed certificates for the TLS frontend: ECDSA P-256 (default) or RSA 2048.

The article's question is the CPU cost of TLS, and the key type decides most of it
(an RSA-2048 signature costs a server core about 15 times more than a P-256 one), so
the type is a choice. Files are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["KEY_TYPES", "issue", "make_certificate", "new_key", "pem", "write_private"]

KEY_TYPES = ("ecdsa", "rsa")


def new_key(key_type: str = "ecdsa") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}: use ecdsa or rsa")


def issue(
    name: str,
    names: list[x509.GeneralName],
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    issuer: x509.Certificate | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    ca: bool = False,
    days: int = 30,
) -> x509.Certificate:
    """A certificate for ``name`` (subject alternative ``names``) signed by ``issuer``
    (itself when None)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def pem(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> tuple[bytes, bytes]:
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only (0600, also when ``path`` existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def make_certificate(
    directory: Path,
    key_type: str = "ecdsa",
    name: str = "localhost",
    days: int = 30,
    addresses: tuple[str, ...] = (),
) -> tuple[Path, Path, Path]:
    """Write ``cert.pem``, ``key.pem`` and ``bundle.pem`` (both, for HAProxy's ``crt``).

    The certificate is valid for ``name``, ``localhost``, 127.0.0.1 and ``addresses``
    (a lab's proxy host).
    """
    key = new_key(key_type)
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    if name != "localhost":
        names.append(x509.DNSName("localhost"))
    for address in dict.fromkeys(("127.0.0.1", *addresses)):
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    cert_pem, key_pem = pem(issue(name, names, key, ca=True, days=days), key)
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "cert.pem", directory / "key.pem", directory / "bundle.pem")
    for path, data in zip(paths, (cert_pem, key_pem, cert_pem + key_pem), strict=True):
        write_private(path, data)
    return paths
