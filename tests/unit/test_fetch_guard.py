"""SSRF guard decisions on addresses and URLs: pure decisions, nothing is connected to."""

from __future__ import annotations

import asyncio
import socket

import pytest
from yarl import URL

from media.guard import AddressRefused, Allow, GuardedResolver, check_address, check_url

NO_ALLOW = Allow.of()

REFUSED = [
    # private
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.5.4", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    # loopback
    ("127.0.0.1", "loopback"),
    ("127.0.0.2", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    # link-local
    ("169.254.1.1", "link_local"),
    ("fe80::1", "link_local"),
    ("fe80::1%eth0", "link_local"),
    # cloud metadata
    ("169.254.169.254", "cloud_metadata"),
    ("169.254.170.2", "cloud_metadata"),
    ("fd00:ec2::254", "cloud_metadata"),
    ("100.100.100.200", "cloud_metadata"),
    ("192.0.0.192", "cloud_metadata"),
    # carrier-grade NAT
    ("100.64.0.1", "cgnat"),
    ("100.127.255.254", "cgnat"),
    # unspecified / "this network"
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    # multicast
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    # reserved, documentation, benchmarking, broadcast, deprecated ranges
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.51.100.7", "reserved"),
    ("203.0.113.9", "reserved"),
    ("198.18.0.1", "reserved"),
    ("2001:db8::1", "reserved"),
    ("fec0::1", "reserved"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved"),  # Teredo
    # IPv6 forms that carry a refused IPv4 address
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:7f00:1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "cloud_metadata"),
    ("::ffff:100.64.0.1", "cgnat"),
    ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible
    ("::10.0.0.1", "reserved"),
    ("64:ff9b::a9fe:a9fe", "cloud_metadata"),  # NAT64 of 169.254.169.254
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b:1::a00:1", "reserved"),  # local-use NAT64
    ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.32.0.1",  # just past 172.16/12
    "100.128.0.1",  # just past 100.64/10
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


@pytest.mark.parametrize(("ip", "category"), REFUSED)
def test_refused_addresses(ip: str, category: str) -> None:
    decision = check_address(ip, "media.example.com", NO_ALLOW)
    assert not decision.allowed
    assert decision.category == category
    assert category.replace("_", " ") in decision.reason


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_allowed(ip: str) -> None:
    decision = check_address(ip, "media.example.com", NO_ALLOW)
    assert decision.allowed
    assert decision.category == "public"


@pytest.mark.parametrize(
    ("ip", "host", "allow", "allowed", "category"),
    [
        ("127.0.0.1", "h", Allow.of(cidrs=["127.0.0.1/32"]), True, "allow_cidr"),
        ("127.0.0.2", "h", Allow.of(cidrs=["127.0.0.1/32"]), False, "loopback"),
        ("::ffff:127.0.0.1", "h", Allow.of(cidrs=["127.0.0.1/32"]), True, "allow_cidr"),
        ("::1", "h", Allow.of(cidrs=["127.0.0.1/32"]), False, "loopback"),
        ("10.1.2.3", "h", Allow.of(cidrs=["10.0.0.0/8"]), True, "allow_cidr"),
        ("10.1.2.3", "h", Allow.of(cidrs=["10.1.2.0/24", "fd00::/8"]), True, "allow_cidr"),
        ("10.1.3.3", "h", Allow.of(cidrs=["10.1.2.0/24"]), False, "private"),
        ("169.254.169.254", "h", Allow.of(cidrs=["10.0.0.0/8"]), False, "cloud_metadata"),
        ("fd00::5", "h", Allow.of(cidrs=["fd00::/8"]), True, "allow_cidr"),
        ("10.0.0.5", "images.internal", Allow.of(hosts=["images.internal"]), True, "allow_host"),
        ("10.0.0.5", "Images.Internal.", Allow.of(hosts=["images.internal"]), True, "allow_host"),
        ("10.0.0.5", "other.internal", Allow.of(hosts=["images.internal"]), False, "private"),
    ],
)
def test_allow_lists(ip: str, host: str, allow: Allow, allowed: bool, category: str) -> None:
    decision = check_address(ip, host, allow)
    assert (decision.allowed, decision.category) == (allowed, category)


def test_garbage_address_refused() -> None:
    decision = check_address("not-an-ip", "h", NO_ALLOW)
    assert not decision.allowed
    assert decision.category == "invalid"


@pytest.mark.parametrize(
    ("url", "allowed", "category"),
    [
        ("file:///etc/passwd", False, "bad_scheme"),
        ("ftp://127.0.0.1/x.jpg", False, "bad_scheme"),
        ("gopher://127.0.0.1:70/_x", False, "bad_scheme"),
        ("data:image/png;base64,AAAA", False, "bad_scheme"),
        ("http:///x.jpg", False, "bad_url"),
        ("http://127.0.0.1/x.jpg", False, "loopback"),
        ("http://[::1]:8080/x.jpg", False, "loopback"),
        ("http://[::ffff:169.254.169.254]/latest/meta-data/", False, "cloud_metadata"),
        ("http://169.254.169.254/latest/meta-data/", False, "cloud_metadata"),
        ("http://2130706433/", False, "reserved"),  # 127.0.0.1 as one integer
        ("http://127.1/", False, "reserved"),
        ("http://0x7f.0.0.1/", False, "reserved"),
        ("HTTPS://8.8.8.8/x.jpg", True, "public"),
        ("https://media.example.com/x.jpg", True, "hostname"),  # checked when resolved
    ],
)
def test_check_url(url: str, allowed: bool, category: str) -> None:
    decision = check_url(URL(url), NO_ALLOW)
    assert (decision.allowed, decision.category) == (allowed, category)


def test_check_url_ip_literal_allow_listed() -> None:
    decision = check_url(URL("http://127.0.0.1:8080/x.jpg"), Allow.of(cidrs=["127.0.0.1/32"]))
    assert decision.allowed


def _resolve(allow: Allow, host: str) -> list[str]:
    async def go() -> list[str]:
        resolver = GuardedResolver(allow)
        try:
            results = await resolver.resolve(host, 80, socket.AF_UNSPEC)
        finally:
            await resolver.close()
        return [r["host"] for r in results]

    return asyncio.run(go())


def test_resolver_refuses_name_resolving_to_loopback() -> None:
    # "localhost" is answered from /etc/hosts: no DNS traffic leaves the machine.
    with pytest.raises(AddressRefused) as info:
        _resolve(NO_ALLOW, "localhost")
    assert info.value.host == "localhost"
    assert info.value.decision.category == "loopback"


def test_resolver_keeps_only_allowed_addresses() -> None:
    hosts = _resolve(Allow.of(cidrs=["127.0.0.1/32"]), "localhost")
    assert hosts == ["127.0.0.1"]


def test_resolver_allow_listed_host_keeps_everything() -> None:
    hosts = _resolve(Allow.of(hosts=["localhost"]), "localhost")
    assert "127.0.0.1" in hosts
