"""The 32-byte index key: where it comes from, and how it is kept out of logs, errors and reprs.

The key is the KEK cyborgdb-core wraps each index's data key with; it is passed on every call
and never stored by the engine (nor by mediavec). It comes from exactly one configured source:

- a key file (``key_file``): 32 raw bytes, or 64 hexadecimal characters (surrounding whitespace
  ignored), ideally mode 0600;
- an environment variable whose *name* is configured (``key_env``): 64 hexadecimal characters.

There is no default key and no fallback: with neither source configured, loading fails.

:class:`IndexKey` holds the bytes. Its ``repr`` and ``str`` show only a key id (an HMAC of a
constant under the key, 8 bytes), it refuses to be pickled, and :meth:`IndexKey.reveal` is the
one way to the bytes, called only where they are handed to the engine. Error messages name the
source (a path or a variable name), never its content.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

logger = logging.getLogger(__name__)

KEY_BYTES = 32
_HEX = frozenset(string.hexdigits.encode())
_KEY_ID_INFO = b"mediavec encindex key id v1"


class IndexKeyError(ValueError):
    """The index key is missing, unreadable or malformed; the message never holds key material."""


class IndexKey:
    """A 32-byte index key that does not print itself."""

    __slots__ = ("_key_id", "_material")

    def __init__(self, material: bytes) -> None:
        if not isinstance(material, bytes) or len(material) != KEY_BYTES:
            size = len(material) if isinstance(material, bytes) else type(material).__name__
            raise IndexKeyError(f"an index key is {KEY_BYTES} bytes, got {size}")
        self._material = material
        self._key_id = hmac.new(material, _KEY_ID_INFO, hashlib.sha256).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        """A public fingerprint (16 hex digits) that tells keys apart without revealing them."""
        return self._key_id

    def reveal(self) -> bytes:
        """The raw key, for the engine call that needs it; never log or store the result."""
        return self._material

    def __repr__(self) -> str:
        return f"IndexKey(id={self._key_id})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IndexKey) and hmac.compare_digest(self._material, other._material)

    def __hash__(self) -> int:
        return hash(self._key_id)

    def __reduce__(self) -> NoReturn:
        raise TypeError("an IndexKey cannot be pickled: keys never leave the process")


def generate_key() -> IndexKey:
    """A fresh random key (for new stores, rotation and tests)."""
    return IndexKey(secrets.token_bytes(KEY_BYTES))


def parse_key(data: bytes, source: str) -> IndexKey:
    """A key from 32 raw bytes or 64 hex characters; ``source`` names the origin in errors."""
    if len(data) == KEY_BYTES:
        if all(b in _HEX for b in data):
            # 32 hex digits are a 16-byte key written as hex, not 32 raw bytes of a random key.
            raise IndexKeyError(f"{source} holds 32 hex characters (a 16-byte key); an index key is 64 hex characters")
        return IndexKey(data)
    text = data.strip()
    if len(text) == 2 * KEY_BYTES and all(b in _HEX for b in text):
        return IndexKey(bytes.fromhex(text.decode("ascii")))
    raise IndexKeyError(
        f"{source} must hold {KEY_BYTES} raw bytes or {2 * KEY_BYTES} hex characters, found {len(data)} bytes"
    )


def load_key(key_file: Path | None, key_env: str | None, environ: Mapping[str, str] | None = None) -> IndexKey:
    """The key from the one configured source; raises IndexKeyError when none or both are set."""
    if key_file is not None and key_env:
        raise IndexKeyError("both an index key file and an index key variable are configured; set only one")
    if key_file is not None:
        return _from_file(Path(key_file))
    if key_env:
        return _from_env(key_env, os.environ if environ is None else environ)
    raise IndexKeyError(
        "no index key configured: set MEDIAVEC_ENCINDEX__KEY_FILE (a file holding 32 raw bytes or 64 hex "
        "characters) or MEDIAVEC_ENCINDEX__KEY_ENV (the name of a variable holding 64 hex characters)"
    )


def _from_file(path: Path) -> IndexKey:
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise IndexKeyError(f"cannot read the index key file {path}: {exc.strerror or type(exc).__name__}") from None
    if mode & 0o077:
        logger.warning("index key file %s is readable by group or others (mode %o): chmod 600 it", path, mode & 0o777)
    return parse_key(data, f"index key file {path}")


def _from_env(name: str, environ: Mapping[str, str]) -> IndexKey:
    value = environ.get(name)
    if not value:
        raise IndexKeyError(f"the index key variable {name} is not set or empty")
    try:
        data = value.encode("ascii")
    except UnicodeEncodeError:
        raise IndexKeyError(f"the index key variable {name} must hold {2 * KEY_BYTES} hex characters") from None
    text = data.strip()
    if len(text) != 2 * KEY_BYTES or not all(b in _HEX for b in text):
        raise IndexKeyError(f"the index key variable {name} must hold {2 * KEY_BYTES} hex characters")
    return IndexKey(bytes.fromhex(text.decode("ascii")))


def write_key_file(path: Path, key: IndexKey) -> None:
    """Write a new key file as hex, mode 0600; refuses to overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.reveal().hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
