"""SSRF guard: media URLs come from producers, so the fetcher must never reach inside the network.

The decision is taken on the *resolved* address, not on the URL's text, and the connection goes
to exactly the addresses that passed: :class:`GuardedResolver` is the resolver of the aiohttp
connector, so the check and the connect use the same DNS answer (no rebinding gap). aiohttp does
not call a resolver for IP-literal hosts, so :func:`check_url` checks those before each request
(every redirect hop included).

:func:`check_address` is pure and decides on one address; it never connects anywhere.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALLOWED_SCHEMES = frozenset({"http", "https"})


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Checked in this order; the first match names the refusal. Metadata endpoints come first so the
# reason says "cloud metadata" rather than "link-local" or "CGNAT".
_BLOCKED: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    (
        "cloud_metadata",
        _nets(
            "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean
            "169.254.170.2/32",  # AWS ECS task metadata
            "fd00:ec2::254/128",  # AWS IPv6
            "100.100.100.200/32",  # Alibaba Cloud
            "192.0.0.192/32",  # Oracle Cloud
        ),
    ),
    ("unspecified", _nets("0.0.0.0/8", "::/128")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("link_local", _nets("169.254.0.0/16", "fe80::/10")),
    ("cgnat", _nets("100.64.0.0/10")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    (
        "reserved",
        _nets(
            "240.0.0.0/4",  # includes 255.255.255.255
            "::/96",  # deprecated IPv4-compatible IPv6: no legitimate target
            "64:ff9b:1::/48",  # local-use NAT64
            "fec0::/10",  # deprecated site-local
        ),
    ),
)
# Prefixes whose low 32 bits are an IPv4 address the packet really goes to.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


@dataclass(frozen=True)
class Allow:
    """Exemptions from the guard: exact host names and networks (tests, trusted internal stores)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, hosts: Iterable[str] = (), cidrs: Iterable[str] = ()) -> Allow:
        return cls(
            hosts=frozenset(_norm_host(h) for h in hosts),
            networks=tuple(ipaddress.ip_network(c, strict=False) for c in cidrs),
        )

    def host_allowed(self, host: str) -> bool:
        return _norm_host(host) in self.hosts

    def address_allowed(self, addr: IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in self.networks)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    category: str  # public, allow_host, allow_cidr, loopback, private, cloud_metadata, ...
    reason: str


class AddressRefused(Exception):
    """A host resolved only to addresses the guard refuses (or is a refused IP literal)."""

    def __init__(self, host: str, decision: Decision) -> None:
        super().__init__(f"{host}: {decision.reason}")
        self.host = host
        self.decision = decision


def _norm_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def parse_ip(ip: str | IPAddress) -> IPAddress:
    """Parse an address, dropping an IPv6 zone (``fe80::1%eth0``), which does not change the range."""
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    return ipaddress.ip_address(ip.split("%", 1)[0])


def _embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address really reaches (mapped, NAT64, 6to4), if any."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr in _IPV4_MAPPED or addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.sixtofour


def _category(addr: IPAddress) -> str | None:
    """The refused category of one address, or None when it is a public unicast address."""
    for name, networks in _BLOCKED:
        if any(addr.version == net.version and addr in net for net in networks):
            return name
    if not addr.is_global:  # documentation, benchmarking, protocol assignments, Teredo, ...
        return "reserved"
    return None


def check_address(ip: str | IPAddress, host: str, allow: Allow) -> Decision:
    """Decide whether a connection to ``ip`` (resolved from ``host``) is allowed."""
    try:
        addr = parse_ip(ip)
    except ValueError:
        return Decision(False, "invalid", f"not an IP address: {ip!r}")
    if allow.host_allowed(host):
        return Decision(True, "allow_host", f"host {host} is allow-listed")
    embedded = _embedded_ipv4(addr)
    for candidate in (addr, embedded):
        if candidate is not None and allow.address_allowed(candidate):
            return Decision(True, "allow_cidr", f"{candidate} is in an allow-listed network")
    for candidate in (embedded, addr):
        if candidate is None:
            continue
        category = _category(candidate)
        if category is not None:
            via = f" (embedded in {addr})" if candidate is not addr else ""
            return Decision(False, category, f"address {candidate}{via} is {category.replace('_', ' ')}")
    return Decision(True, "public", f"{addr} is a public address")


def ip_literal(host: str) -> IPAddress | None:
    """The address of an IP-literal host, or None for a host name.

    Legacy numeric IPv4 spellings (``2130706433``, ``127.1``, ``0x7f.1``) are what the C library
    would connect to, so they are refused outright rather than guessed at.
    """
    try:
        return parse_ip(host.strip("[]"))
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        return None
    raise ValueError(f"non-canonical IPv4 literal {host!r}")


def check_url(url: URL, allow: Allow) -> Decision:
    """Scheme and IP-literal check for one request URL (host names are checked at resolution)."""
    scheme = (url.scheme or "").lower()
    if scheme not in ALLOWED_SCHEMES:
        return Decision(False, "bad_scheme", f"scheme {scheme or '(none)'!r} is not http or https")
    host = url.raw_host or ""
    if not host:
        return Decision(False, "bad_url", "URL has no host")
    try:
        literal = ip_literal(host)
    except ValueError as exc:
        return Decision(False, "reserved", str(exc))
    if literal is None:
        return Decision(True, "hostname", "host name: checked when resolved")
    return check_address(literal, host, allow)


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that keeps only the addresses :func:`check_address` allows.

    Built inside a running event loop (the default resolver binds to it).
    """

    def __init__(self, allow: Allow, inner: AbstractResolver | None = None) -> None:
        self._allow = allow
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refused: Decision | None = None
        for result in results:
            decision = check_address(result["host"], host, self._allow)
            if decision.allowed:
                kept.append(result)
            else:
                refused = refused or decision
                logger.info("guard dropped %s -> %s: %s", host, result["host"], decision.reason)
        if not kept:
            raise AddressRefused(host, refused or Decision(False, "unresolved", "no address"))
        return kept

    async def close(self) -> None:
        await self._inner.close()
