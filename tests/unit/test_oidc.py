"""The dev stack's OIDC issuer: its files, its tokens (checked with the public key from its JWKS),
and its token endpoint's answers to right and wrong client credentials, over loopback HTTP."""

from __future__ import annotations

import base64
import json
import stat
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devstack import oidc
from mediavec.settings import Settings


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Check the RS256 signature with the JWKS key named by the token's kid; return the claims."""
    head, body, sig = token.split(".")
    header = json.loads(_unb64(head))
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert header["alg"] == jwk["alg"] == "RS256"
    public = rsa.RSAPublicNumbers(
        int.from_bytes(_unb64(jwk["e"]), "big"), int.from_bytes(_unb64(jwk["n"]), "big")
    ).public_key()
    public.verify(_unb64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    claims: dict[str, Any] = json.loads(_unb64(body))
    return claims


def _post(url: str, form: dict[str, str], auth: tuple[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_issuer_files_are_made_once_and_the_private_ones_are_0600(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files = oidc.ensure(settings)
    for private in (files.key, files.client):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert b"PRIVATE KEY" in files.key.read_bytes() and b"PRIVATE" not in files.jwks.read_bytes()
    key, jwks, login = files.key.read_bytes(), files.jwks.read_text(), oidc.client(settings)
    assert oidc.ensure(settings) == files
    assert (files.key.read_bytes(), files.jwks.read_text()) == (key, jwks), "kept, not remade"
    assert oidc.client(settings).client_secret.get_secret_value() == login.client_secret.get_secret_value()
    assert login.client_secret.get_secret_value() not in repr(login)
    assert files.jwks_url.startswith("file:///") and files.jwks_url.endswith("/oidc/jwks.json")


def test_a_signed_token_verifies_with_the_jwks_and_a_forged_one_does_not(tmp_path: Path) -> None:
    files = oidc.ensure(_settings(tmp_path))
    jwks = json.loads(files.jwks.read_text())
    with oidc.TokenEndpoint(_settings(tmp_path)) as endpoint:
        login = oidc.client(_settings(tmp_path))
        status, body = _post(
            endpoint.url,
            {"grant_type": "client_credentials", "scope": "kafka"},
            (login.client_id, login.client_secret.get_secret_value()),
        )
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] == oidc.TOKEN_LIFETIME_S
    claims = _verify(body["access_token"], jwks)
    assert (claims["iss"], claims["aud"], claims["sub"], claims["scope"]) == (
        oidc.ISSUER,
        oidc.AUDIENCE,
        login.client_id,
        "kafka",
    )
    assert claims["exp"] - claims["iat"] == oidc.TOKEN_LIFETIME_S
    head, body_part, sig = body["access_token"].split(".")
    forged = json.loads(_unb64(body_part)) | {"sub": "admin"}
    forged_part = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        _verify(f"{head}.{forged_part}.{sig}", jwks)
    other = oidc.ensure(_settings(tmp_path / "other"))  # another issuer's key, same kid scheme
    with pytest.raises(ValueError):  # its kid is not in this JWKS
        _verify(oidc.sign(oidc._load_key(other), claims), jwks)


def test_the_token_endpoint_refuses_wrong_credentials_and_grants(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    login = oidc.client(settings)
    secret = login.client_secret.get_secret_value()
    grant = {"grant_type": "client_credentials"}
    with oidc.TokenEndpoint(settings) as endpoint:
        assert _post(endpoint.url, grant, (login.client_id, "wrong"))[0] == 401
        assert _post(endpoint.url, grant, ("someone-else", secret))[0] == 401
        assert _post(endpoint.url, grant)[0] == 401
        assert _post(endpoint.url, {"grant_type": "password"}, (login.client_id, secret)) == (
            400,
            {"error": "unsupported_grant_type"},
        )
        form = grant | {"client_id": login.client_id, "client_secret": secret}
        status, body = _post(endpoint.url, form)  # credentials in the body, as RFC 6749 also allows
        assert status == 200 and body["scope"] == "kafka"
        assert endpoint.refused == 4 and endpoint.issued == [body["access_token"]]
