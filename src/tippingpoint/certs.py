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

__all__ = ["KEY_TYPES", "make_certificate"]

KEY_TYPES = ("ecdsa", "rsa")


def make_certificate(
    directory: Path, key_type: str = "ecdsa", name: str = "localhost", days: int = 30
) -> tuple[Path, Path, Path]:
    """Write ``cert.pem``, ``key.pem`` and ``bundle.pem`` (both, for HAProxy's ``crt``).

    The certificate is valid for ``name``, ``localhost`` and 127.0.0.1.
    """
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"unknown key type {key_type!r}: use ecdsa or rsa")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    if name != "localhost":
        names.append(x509.DNSName("localhost"))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "cert.pem", directory / "key.pem", directory / "bundle.pem")
    for path, data in zip(paths, (cert_pem, key_pem, cert_pem + key_pem), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
    return paths
