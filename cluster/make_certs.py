"""Generate a private certificate authority and TLS certificates for a Dask cluster.

Dask's TLS is mutual: the scheduler, every worker and every client (the dsketch driver)
present a certificate signed by the cluster's own CA, and each checks the other's
certificate against that CA. Host names are not checked (dask sets
``check_hostname=False``), so one certificate per role is enough; the hosts given with
``--host`` are still written into the subjectAltName for tools that do check.

Usage::

    python cluster/make_certs.py CERT_DIR [--host 10.0.0.1 --host sched.example.org]
                                          [--name scheduler --name worker --name client]
                                          [--days 365]

writes ``CERT_DIR/ca.pem`` (the CA certificate, public), ``CERT_DIR/ca-key.pem`` (the CA's
private key: keep it off the cluster), and ``CERT_DIR/NAME.pem`` / ``CERT_DIR/NAME-key.pem``
for every ``--name`` (default: scheduler, worker, client). Private keys are written with
mode 0600. Needs the ``cryptography`` package (``pip install cryptography``); the same
files can be made with ``openssl`` as shown in ``cluster/tls.md``.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_NAMES = ("scheduler", "worker", "client")
DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CertPair:
    """Paths of one certificate and its private key (PEM files)."""

    cert: str
    key: str


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _san(hosts: Sequence[str]):
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_certificates(
    out_dir: str | os.PathLike[str],
    *,
    names: Sequence[str] = DEFAULT_NAMES,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 365,
    ca_name: str = "dsketch cluster CA",
) -> dict[str, CertPair]:
    """Write a CA and one certificate per name, signed by that CA, under ``out_dir``.

    Parameters
    ----------
    out_dir : str or path
        Target directory (created if missing).
    names : sequence of str
        Roles to issue certificates for; each becomes the certificate's common name and
        the file names ``NAME.pem`` / ``NAME-key.pem``.
    hosts : sequence of str
        IP addresses or DNS names written into every certificate's subjectAltName.
    days : int
        Validity of the CA and the certificates.
    ca_name : str
        Common name of the CA.

    Returns
    -------
    dict of str to CertPair
        ``"ca"`` (the CA certificate and key) and one entry per name.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "make_certificates needs the cryptography package: pip install cryptography "
            "(or make the files with openssl, see cluster/tls.md)"
        ) from exc
    if days < 1:
        raise ValueError(f"days must be >= 1; got {days}")
    if not names:
        raise ValueError("give at least one certificate name")
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pairs = {"ca": CertPair(os.path.join(out, "ca.pem"), os.path.join(out, "ca-key.pem"))}
    with open(pairs["ca"].cert, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(pairs["ca"].key, pem_key(ca_key))

    for name in names:
        if not name or os.sep in name or name == "ca":
            raise ValueError(f"certificate name {name!r} must be a plain file stem other than 'ca'")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pair = CertPair(os.path.join(out, f"{name}.pem"), os.path.join(out, f"{name}-key.pem"))
        with open(pair.cert, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(pair.key, pem_key(key))
        pairs[name] = pair
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory for the PEM files")
    parser.add_argument("--name", action="append", default=None,
                        help=f"certificate to issue (repeatable; default: {', '.join(DEFAULT_NAMES)})")
    parser.add_argument("--host", action="append", default=None,
                        help=f"IP or DNS name for the subjectAltName (repeatable; default: "
                             f"{', '.join(DEFAULT_HOSTS)})")
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    try:
        pairs = make_certificates(args.out_dir, names=args.name or DEFAULT_NAMES,
                                  hosts=args.host or DEFAULT_HOSTS, days=args.days)
    except (ImportError, ValueError, OSError) as exc:
        print(f"make_certs: error: {exc}", file=sys.stderr)
        return 2
    for name, pair in pairs.items():
        print(f"{name:<10} {pair.cert}  {pair.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
