"""An OAuth 2.0 issuer for the dev broker's OAUTHBEARER logins: client credentials in, RS256 JWTs out.

Production Kafka clusters that use OAUTHBEARER (Strimzi with Keycloak, Confluent, most managed
services) take JWTs from an OIDC provider: the client posts its id and secret to the provider's
token endpoint (the client credentials grant), receives a signed JWT and presents it to the
broker, which checks the signature against the provider's public keys (JWKS), the issuer, the
audience and the expiry. librdkafka does the client half itself (``sasl.oauthbearer.method=oidc``;
see :class:`streams.settings.KafkaSettings`), so mediavec's workers only need settings.

The dev stack plays the provider, so that path runs for real on one machine:

* :func:`ensure` makes, once per stack under ``<data_dir>/oidc/``, an RSA signing key
  (``issuer-key.pem``, 0600), its public half as a JWKS (``jwks.json``, which the broker reads
  through a ``file:`` URL, see :func:`devstack.kafka.server_properties`), and one client
  (``client.json``, 0600: an id and a random secret).
* :class:`TokenEndpoint` serves ``POST /token`` (HTTP Basic or form credentials, as RFC 6749
  allows) and ``GET /jwks`` on loopback. Tests start one; a person can run one with
  ``python -m devstack.oidc`` and point ``MEDIAVEC_KAFKA__OAUTHBEARER_TOKEN_ENDPOINT_URL``
  at it.

Tokens carry ``iss`` = :data:`ISSUER`, ``aud`` = :data:`AUDIENCE`, ``sub`` = the client id (the
broker's principal), ``scope``, ``iat`` and ``exp``. Neither the client secret nor a token is ever
logged; :attr:`TokenEndpoint.issued` keeps the tokens handed out so a test can search logs for them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from devstack import tls
from devstack.credentials import write_private
from devstack.settings import DevSettings
from mediavec.appserver import AppServer
from streams.settings import KafkaSettings

logger = logging.getLogger(__name__)

ISSUER = "mediavec-dev-oidc"
AUDIENCE = "mediavec-dev-kafka"
CLIENT_ID = "mediavec"
TOKEN_LIFETIME_S = 3600


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _uint(n: int) -> str:
    return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class OidcFiles:
    root: Path

    @classmethod
    def of(cls, settings: DevSettings) -> OidcFiles:
        return cls(settings.data_dir.resolve() / "oidc")

    @property
    def key(self) -> Path:
        return self.root / "issuer-key.pem"

    @property
    def jwks(self) -> Path:
        return self.root / "jwks.json"

    @property
    def client(self) -> Path:
        return self.root / "client.json"

    @property
    def jwks_url(self) -> str:
        """What the broker reads the issuer's public keys from."""
        return self.jwks.as_uri()


@dataclass(frozen=True, repr=False)
class OidcClient:
    client_id: str
    client_secret: SecretStr

    def __repr__(self) -> str:
        return f"OidcClient(client_id={self.client_id!r}, client_secret=SecretStr('**********'))"


def ensure(settings: DevSettings) -> OidcFiles:
    """The issuer's key, its JWKS and the stack's client, made on first use and kept."""
    files = OidcFiles.of(settings)
    if not files.key.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if write_private(files.key, pem.decode(), replace=False):
            logger.info("dev stack OIDC: new issuer key in %s", files.root)
    if not files.client.exists():
        client = {"client_id": CLIENT_ID, "client_secret": secrets.token_urlsafe(32)}
        write_private(files.client, json.dumps(client) + "\n", replace=False)
    jwks = json.dumps(_jwks(_load_key(files))) + "\n"
    if not files.jwks.exists() or files.jwks.read_text() != jwks:  # public: readable by all, moved into place
        tmp = files.jwks.with_name(f".{files.jwks.name}.{os.getpid()}.tmp")
        tmp.write_text(jwks)
        os.replace(tmp, files.jwks)
    return files


def client(settings: DevSettings) -> OidcClient:
    stored = json.loads(ensure(settings).client.read_text())
    return OidcClient(stored["client_id"], SecretStr(stored["client_secret"]))


def _load_key(files: OidcFiles) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{files.key} is not an RSA key")
    return key


def _kid(public: rsa.RSAPublicKey) -> str:
    """RFC 7638 thumbprint of the public key: stable across restarts, new with a new key."""
    nums = public.public_numbers()
    canonical = json.dumps({"e": _uint(nums.e), "kty": "RSA", "n": _uint(nums.n)}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _jwks(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    public = key.public_key()
    nums = public.public_numbers()
    jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": _kid(public), "n": _uint(nums.n), "e": _uint(nums.e)}
    return {"keys": [jwk]}


def sign(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    """A compact RS256 JWS of ``claims`` with the key's ``kid`` in the header."""
    header = {"alg": "RS256", "typ": "JWT", "kid": _kid(key.public_key())}
    head = _b64url(json.dumps(header, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{_b64url(signature)}"


def claims(subject: str, scope: str, lifetime_s: int = TOKEN_LIFETIME_S, now: float | None = None) -> dict[str, Any]:
    issued = int(now if now is not None else time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "scope": scope,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": secrets.token_hex(8),
    }


class TokenEndpoint(AppServer):
    """``POST /token`` (client credentials grant) and ``GET /jwks`` on ``host:port`` (0: any free)."""

    def __init__(
        self, settings: DevSettings, host: str = "127.0.0.1", port: int = 0, lifetime_s: int = TOKEN_LIFETIME_S
    ) -> None:
        super().__init__(host, port)
        self.files = ensure(settings)
        self._key = _load_key(self.files)
        self._client = client(settings)
        self.lifetime_s = lifetime_s
        self.issued: list[str] = []  # every token handed out (tests search logs for them)
        self.refused = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def client_id(self) -> str:
        return self._client.client_id

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get("/jwks", self._jwks)
        return app

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(_jwks(self._key))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, secret = _basic(request.headers.get("Authorization"))
        client_id = client_id or str(form.get("client_id", ""))
        secret = secret or str(form.get("client_secret", ""))
        if form.get("grant_type") != "client_credentials":
            return self._refuse(400, "unsupported_grant_type")
        expected = self._client.client_secret.get_secret_value()
        if client_id != self._client.client_id or not secrets.compare_digest(secret.encode(), expected.encode()):
            return self._refuse(401, "invalid_client")
        scope = str(form.get("scope", "kafka"))
        token = sign(self._key, claims(client_id, scope, self.lifetime_s))
        with self._lock:
            self.issued.append(token)
        logger.info("issued a token to %s for %d s", client_id, self.lifetime_s)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime_s, "scope": scope}
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _refuse(self, status: int, error: str) -> web.Response:
        with self._lock:
            self.refused += 1
        logger.warning("token request refused: %s", error)
        return web.json_response({"error": error}, status=status)


def _basic(header: str | None) -> tuple[str, str]:
    if not header or not header.lower().startswith("basic "):
        return "", ""
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def kafka_oidc_settings(
    settings: DevSettings, token_endpoint_url: str, secret: SecretStr | None = None
) -> KafkaSettings:
    """``settings.kafka`` pointed at the dev broker's SASL_SSL listener, logging in with OIDC tokens."""
    login = client(settings)
    return tls.kafka_tls_settings(settings).model_copy(
        update={
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_username": None,
            "sasl_password": None,
            "oauthbearer_method": "oidc",
            "oauthbearer_client_id": login.client_id,
            "oauthbearer_client_secret": secret or login.client_secret,
            "oauthbearer_token_endpoint_url": token_endpoint_url,
            "oauthbearer_scope": "kafka",
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the dev stack's OIDC token endpoint on loopback.")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = DevSettings()
    with TokenEndpoint(settings, port=args.port) as endpoint:
        print(f"token endpoint: {endpoint.url}")
        print(f"client id: {endpoint.client_id}; its secret is in {endpoint.files.client}")
        print("set MEDIAVEC_KAFKA__SASL_MECHANISM=OAUTHBEARER MEDIAVEC_KAFKA__OAUTHBEARER_METHOD=oidc and the rest;")
        print("Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
