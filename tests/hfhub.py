"""A stand-in Hugging Face hub on loopback: the file endpoints ``hf_hub_download`` calls, nothing more.

``HEAD`` and ``GET /{org}/{name}/resolve/{revision}/{filename}`` answer the way huggingface.co
does for a direct (unredirected) download: ``X-Repo-Commit``, an ``ETag`` (the sha256 of an LFS
file, quoted, also sent as ``X-Linked-Etag`` with ``X-Linked-Size``; the git blob sha1 of a small
file), ``Content-Length``; errors carry the ``X-Error-Code`` huggingface_hub maps to its exception
classes (``RepoNotFound``, ``EntryNotFound``, ``GatedRepo``). Point ``HF_ENDPOINT`` at
:attr:`StandInHub.url`.

A file may be served with bytes other than those its ETag names (:meth:`StandInHub.add`'s
``claimed``), as a corrupted mirror or a damaged transfer would deliver them.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx")
CHUNK = 1 << 20
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")


@dataclass(frozen=True)
class ServedFile:
    source: Path | bytes
    etag: str
    size: int
    lfs: bool

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.source, bytes):
            yield self.source
            return
        with self.source.open("rb") as f:
            while block := f.read(CHUNK):
                yield block


@dataclass
class Repo:
    commit: str
    files: dict[str, ServedFile] = field(default_factory=dict)
    token: str | None = None  # gated: only this bearer token may read it


def sha256_of(source: Path | bytes) -> str:
    digest = hashlib.sha256()
    for block in ServedFile(source, "", 0, True).chunks():
        digest.update(block)
    return digest.hexdigest()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class StandInHub:
    """Repositories in memory, served by a threaded HTTP server on 127.0.0.1 (use as a context manager)."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), in arrival order
        self.authorizations: list[str] = []  # Authorization headers received
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, repo_id: str, filename: str, source: Path | bytes, *, claimed: Path | bytes | None = None) -> None:
        """Serve ``source`` as ``repo_id/filename``; ``claimed``: the content its ETag describes instead."""
        repo = self.repos.setdefault(repo_id, Repo(commit=hashlib.sha1(repo_id.encode()).hexdigest()))
        described = source if claimed is None else claimed
        lfs = filename.endswith(LFS_SUFFIXES)
        if lfs:
            etag = sha256_of(described)
        else:
            etag = git_blob_sha1(described if isinstance(described, bytes) else described.read_bytes())
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        repo.files[filename] = ServedFile(source, etag, size, lfs)

    def gate(self, repo_id: str, token: str) -> None:
        self.repos[repo_id].token = token

    def downloads(self, filename: str) -> int:
        """How many GET requests asked for a file of this name."""
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith("/" + filename))

    def __enter__(self) -> StandInHub:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, *, body: bool) -> None:
            hub.requests.append((self.command, self.path))
            hub.authorizations.append(self.headers.get("Authorization", ""))
            match = _RESOLVE.match(self.path.split("?", 1)[0])
            repo = hub.repos.get(match["repo"]) if match else None
            if match is None or repo is None:
                return self._error(404, "RepoNotFound", None)
            if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
                return self._error(401, "GatedRepo", repo.commit)
            served = repo.files.get(match["filename"])
            if served is None:
                return self._error(404, "EntryNotFound", repo.commit)
            self._send(repo.commit, served, body=body)

        def _send(self, commit: str, served: ServedFile, *, body: bool) -> None:
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{served.etag}"')
            if served.lfs:
                self.send_header("X-Linked-Etag", f'"{served.etag}"')
                self.send_header("X-Linked-Size", str(served.size))
            self.send_header("Content-Length", str(served.size))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                for block in served.chunks():
                    self.wfile.write(block)

        def _error(self, status: int, code: str, commit: str | None) -> None:
            message = f"{code} (stand-in hub)".encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(message)

    return Handler


def closed_port() -> str:
    """An endpoint on loopback where nothing listens: a hub that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
