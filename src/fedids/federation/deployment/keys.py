"""Key material of a deployment: the private CA, the SuperLink's TLS certificate, SuperNode authentication
keys in the OpenSSH formats Flower reads, and their fingerprints (pure apart from drawing random keys from
the OS CSPRNG)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedids.errors import InputError
from fedids.federation.deployment.commands import validate_host

NODE_KEY_CURVE = ec.SECP384R1  # Flower's documentation uses `ssh-keygen -t ecdsa -b 384`
TLS_KEY_CURVE = ec.SECP384R1
CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 825  # the longest validity TLS clients commonly accept for a server certificate
CLOCK_SKEW = dt.timedelta(minutes=5)  # notBefore in the past, so hosts with slightly slow clocks accept it


def create_ca(
    common_name: str = "fedids deployment CA",
    *,
    valid_days: int = CA_VALID_DAYS,
    now: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed certificate authority (ECDSA P-384) that may sign end-entity certificates only.

    Parameters
    ----------
    common_name : str
        Subject CN of the CA.
    valid_days : int
        Validity in days, from ``now`` (minus five minutes of clock-skew allowance).
    now : datetime, optional
        Issue time (UTC); defaults to the current time.

    Returns
    -------
    (key, certificate)
    """
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(TLS_KEY_CURVE())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedids"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """subjectAltName entries for ``hosts`` plus ``localhost``, ``127.0.0.1`` and ``::1``, deduplicated.

    IP literals become ``IPAddress`` entries, everything else ``DNSName`` entries (TLS clients match
    an IP address only against ``IPAddress`` entries).
    """
    names: list[x509.GeneralName] = []
    for host in [*hosts, "localhost", "127.0.0.1", "::1"]:
        host = validate_host(host)
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host.lower())
        if entry not in names:
            names.append(entry)
    return names


def create_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: Sequence[str],
    *,
    valid_days: int = SERVER_VALID_DAYS,
    now: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's TLS server certificate, signed by ``ca_key``.

    ``hosts`` are the names or IP addresses SuperNodes and the operator use to reach the SuperLink;
    the loopback names are always added (see :func:`subject_alt_names`). The subject CN is the first host.
    """
    if not hosts:
        raise ValueError("at least one SuperLink host name or address is needed")
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(TLS_KEY_CURVE())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        # CN is at most 64 characters; clients match names against the subjectAltName, not the CN.
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64]),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedids"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def create_node_key() -> ec.EllipticCurvePrivateKey:
    """A SuperNode authentication key (ECDSA on NIST P-384, as Flower's own guide generates)."""
    return ec.generate_private_key(NODE_KEY_CURVE())


def encode_certificate(cert: x509.Certificate) -> bytes:
    """PEM bytes of ``cert``."""
    return cert.public_bytes(serialization.Encoding.PEM)


def encode_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, the form uvicorn/OpenSSL load for ``--ssl-keyfile``."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def encode_node_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """OpenSSH private-key bytes (``-----BEGIN OPENSSH PRIVATE KEY-----``), unencrypted.

    Unencrypted because ``flower-supernode`` loads the key with no passphrase; protect it with file
    permissions (0600) instead.
    """
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def encode_node_public_key(
    key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey, comment: str = ""
) -> bytes:
    """One OpenSSH public-key line (``ecdsa-sha2-nistp384 AAAA... comment``) with a trailing newline."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + (b" " + comment.encode() if comment else b"") + b"\n"


def node_key_fingerprint(public_key_line: bytes) -> str:
    """OpenSSH's fingerprint of a public-key line: ``SHA256:`` + unpadded base64 of SHA-256(key blob).

    The same string ``ssh-keygen -lf auth.pub`` prints, so a key can be checked on any host.
    """
    parts = public_key_line.split()
    if len(parts) < 2:
        raise InputError("public key: not an OpenSSH public-key line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise InputError("public key: not an OpenSSH public-key line") from None
    digest = hashes.Hash(hashes.SHA256())
    digest.update(blob)
    return "SHA256:" + base64.b64encode(digest.finalize()).decode().rstrip("=")
