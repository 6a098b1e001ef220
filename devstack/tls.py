"""A private CA and a server certificate for the dev broker's TLS listener (SASL_SSL).

Made once per stack under ``<data_dir>/tls/`` and renewed when they would expire within 30 days:
``ca.pem`` (what clients trust: ``MEDIAVEC_KAFKA__SSL_CA_LOCATION``), ``ca-key.pem`` and
``broker.pem`` (the broker's PKCS#8 key and its certificate, read by Kafka as a PEM key store;
both keys are written 0600). The broker certificate names ``127.0.0.1``, ``::1``,
``localhost`` and ``MEDIAVEC_DEVSTACK__KAFKA_HOST``, so clients verify the host name as they would
in production.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack import cluster, credentials
from devstack.credentials import write_private
from devstack.settings import DevSettings
from streams.settings import KafkaSettings

logger = logging.getLogger(__name__)

VALID_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    root: Path

    @classmethod
    def of(cls, settings: DevSettings) -> TlsFiles:
        return cls(settings.data_dir.resolve() / "tls")

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca-key.pem"

    @property
    def broker_pem(self) -> Path:
        """The broker's private key followed by its certificate (Kafka's PEM key store)."""
        return self.root / "broker.pem"


def ensure(settings: DevSettings) -> TlsFiles:
    """The stack's CA and broker certificate, made or renewed when needed."""
    files = TlsFiles.of(settings)
    names = broker_names(settings)
    if _current(files, names):
        return files
    files.root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mediavec dev stack CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**_usage(cert_sign=True)), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    broker = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name, key.public_key(), now)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**_usage(digital_signature=True)), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(files.ca_key, _pkcs8(ca_key))
    write_private(files.broker_pem, _pkcs8(key) + _pem(broker) + _pem(ca))
    files.ca_cert.write_text(_pem(ca))
    logger.info("dev stack TLS: new CA and broker certificate in %s (trust %s)", files.root, files.ca_cert)
    return files


def broker_names(settings: DevSettings) -> list[x509.GeneralName]:
    """What the broker certificate names: the loopback names, and ``MEDIAVEC_DEVSTACK__KAFKA_HOST``
    where the listeners are given another address (clients on other hosts verify that one)."""
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    host = settings.devstack.kafka_host
    try:
        extra: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        extra = x509.DNSName(host)
    return names if extra in names else [*names, extra]


def _current(files: TlsFiles, names: list[x509.GeneralName]) -> bool:
    """The files exist, name every one of ``names`` and stay valid for a while yet."""
    if not (files.ca_cert.exists() and files.broker_pem.exists() and files.ca_key.exists()):
        return False
    broker = x509.load_pem_x509_certificates(files.broker_pem.read_bytes())[0]
    if not set(names) <= set(broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value):
        return False
    soonest = dt.datetime.now(dt.UTC) + RENEW_BEFORE
    for path in (files.ca_cert, files.broker_pem):
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
        if cert.not_valid_after_utc <= soonest:
            return False
    return True


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )


def _usage(*, digital_signature: bool = False, cert_sign: bool = False) -> dict[str, bool]:
    return {
        "digital_signature": digital_signature,
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "key_cert_sign": cert_sign,
        "crl_sign": cert_sign,
        "encipher_only": False,
        "decipher_only": False,
    }


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> str:
    raw = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return raw.decode()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def port(settings: DevSettings) -> int:
    """Node 0's SASL_SSL listener: three ports above its plaintext one."""
    return cluster.ports(settings).tls


def bootstrap_servers(settings: DevSettings) -> str:
    """Every node's SASL_SSL listener."""
    return cluster.bootstrap_servers(settings, "tls")


def kafka_tls_settings(
    settings: DevSettings, mechanism: credentials.SaslMechanism = "SCRAM-SHA-512", ca: Path | None = None
) -> KafkaSettings:
    """``settings.kafka`` pointed at the SASL_SSL listener, trusting the stack's CA (or ``ca``)."""
    sasl = credentials.kafka_sasl_settings(settings, mechanism)
    return sasl.model_copy(
        update={
            "bootstrap_servers": bootstrap_servers(settings),
            "security_protocol": "SASL_SSL",
            "ssl_ca_location": str(ca or TlsFiles.of(settings).ca_cert),
        }
    )
