"""The local cluster's certificates: a CA, serving and client certificates, service-account keys,
and kubeconfigs that embed them."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Pki:
    """The cluster's CA and the certificates issued from it, as PEM files in one folder."""

    dir: Path
    # Leaf certificates are re-issued when they get this close to expiry (the CA lasts 10 years).
    renew_before: dt.timedelta = dt.timedelta(days=30)

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.crt("ca").read_bytes())
        key = serialization.load_pem_private_key(self.key("ca").read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def ensure_ca(self) -> None:
        """Create the CA once; it signs every serving and client certificate of the cluster."""
        if self.crt("ca").exists() and self.key("ca").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = _name("iotistic-local-cluster-ca")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.key("ca"), key)
        self.crt("ca").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _fresh(self, name: str) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(self.crt(name).read_bytes())
        except (OSError, ValueError):
            return False
        return (
            self.key(name).exists() and cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > self.renew_before
        )

    def issue(
        self,
        name: str,
        cn: str,
        *,
        orgs: Iterable[str] = (),
        dns: Iterable[str] = (),
        ips: Iterable[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> None:
        """Issue `name`.crt/.key signed by the CA, unless a valid one is already there."""
        if self._fresh(name):
            return
        ca_cert, ca_key = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(self.key(name), key)
        self.crt(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def ensure_service_account_key(self) -> None:
        """The key pair the API server signs service-account tokens with (and verifies them by)."""
        if self.key("sa").exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(self.key("sa"), key)
        self.dir.joinpath("sa.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def write_kubeconfig(
    path: Path, server: str, pki: Pki, cert: str, user: str, tls_server_name: str | None = None
) -> None:
    """A kubeconfig with the CA and client certificate embedded, so its content works on its own.

    `tls_server_name`: the name to check the server's certificate against, when `server`'s address
    is not one of its names (the real node reaches the API server through a relay).
    """

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    cluster = {"server": server, "certificate-authority-data": b64(pki.crt("ca"))}
    if tls_server_name:
        cluster["tls-server-name"] = tls_server_name

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "iotistic-local", "cluster": cluster}],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki.crt(cert)),
                    "client-key-data": b64(pki.key(cert)),
                },
            }
        ],
        "contexts": [{"name": "iotistic-local", "context": {"cluster": "iotistic-local", "user": user}}],
        "current-context": "iotistic-local",
        "preferences": {},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
