"""The Qdrant server client over TLS: the server's certificate is checked against the configured
CA, and the API key travels only inside a verified connection.

No Qdrant server runs on this machine, so the peer is an https listener on loopback whose
certificate comes from a private CA (the dev stack's TLS code makes one) and which answers every
request 404. That is enough to show what these settings do: with the right CA the request gets
through TLS and reaches the listener (the client then fails on the 404, at the HTTP level);
with any other CA the handshake fails and the listener sees nothing, so no key is sent.
"""

from __future__ import annotations

import secrets
import ssl
import threading
from pathlib import Path

import pytest
from aiohttp import web
from qdrant_client.http.exceptions import UnexpectedResponse

from devstack import tls
from devstack.settings import DevSettings
from mediavec.appserver import AppServer
from stores.settings import QdrantSettings
from stores.vectorstore.server import remote_client


class _Listener(AppServer):
    """Answers 404 to everything and remembers each request's path and api-key header."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        super().__init__(ssl_context=ssl_context)
        self.seen: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        return app

    async def _any(self, request: web.Request) -> web.Response:
        with self._lock:
            self.seen.append((request.path, request.headers.get("api-key")))
        return web.json_response({"status": {"error": "not a Qdrant server"}}, status=404)


@pytest.fixture
def listener(tmp_path: Path) -> tuple[_Listener, Path]:
    files = tls.ensure(DevSettings(data_dir=tmp_path / "server"))  # a CA and a certificate for 127.0.0.1
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.broker_pem)
    return _Listener(context), files.ca_cert


def _qdrant(url: str, key: str, ca: Path | None) -> QdrantSettings:
    return QdrantSettings.model_validate({"url": url, "api_key": key, "ca_file": ca, "timeout_s": 5})


def test_the_configured_ca_verifies_the_server_and_the_key_is_sent(listener: tuple[_Listener, Path]) -> None:
    server, ca = listener
    key = secrets.token_urlsafe(16)
    with server:
        client = remote_client(_qdrant(server.base_url, key, ca))
        with pytest.raises(UnexpectedResponse) as answered:
            client.get_collections()
        assert answered.value.status_code == 404, "TLS passed; the listener answered"
        client.close()
    assert server.seen and all(header == key for _, header in server.seen)
    assert server.seen[-1][0] == "/collections"


def test_a_server_certificate_from_another_ca_is_refused_before_the_key_is_sent(
    listener: tuple[_Listener, Path], tmp_path: Path
) -> None:
    server, _ = listener
    other_ca = tls.ensure(DevSettings(data_dir=tmp_path / "other")).ca_cert
    with server:
        for ca in (other_ca, None):  # another private CA, and the system's CAs
            client = remote_client(_qdrant(server.base_url, secrets.token_urlsafe(16), ca))
            with pytest.raises(Exception) as refused:
                client.get_collections()
            chain: list[BaseException] = []
            err: BaseException | None = refused.value
            while err is not None and len(chain) < 10:
                chain.append(err)
                err = err.__cause__ or err.__context__
            assert any("CERTIFICATE_VERIFY_FAILED" in str(e) for e in chain), chain
            client.close()
    assert server.seen == [], "no request got through"


def test_a_ca_file_with_a_plain_http_url_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="not https"):
        remote_client(_qdrant("http://127.0.0.1:6333", "k", Path("/nonexistent/ca.pem")))
