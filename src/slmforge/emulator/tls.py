"""The self-signed certificate the emulator and Azurite serve, made fresh at each start.

It is its own CA: clients trust it through REQUESTS_CA_BUNDLE / connection_verify. The names
cover the loopback address and the storage host names the SDK builds
(`https://<account>.blob.<storage_endpoint>`, docs/pitfalls.md: *.blob.core.localhost).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from pathlib import Path

HOST_NAMES = ("localhost", "*.localhost", "*.blob.core.localhost", "*.vault.core.localhost")


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """Write cert.pem and key.pem (0600) into `folder`; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own per certificate: OpenSSL picks a trusted CA by subject, so two emulators'
    # certificates with one name in one CA bundle (a process talking to both) would not verify.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"slmforge emulator {secrets.token_hex(4)}")])
    now = dt.datetime.now(dt.timezone.utc)
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] + [x509.DNSName(n) for n in HOST_NAMES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
