"""The SSRF guard's decisions (agentkit.tools._ssrf), without any network.

The end-to-end proof that blocked fetches never reach a socket is in test_web_fetch.py; this
file pins down the classification tables, the numeric-form normalisation and the "any bad
address refuses the host" rule, using a test resolver.
"""

from __future__ import annotations

import pytest

from agentkit.tools._ssrf import (
    Blocked,
    FetchPolicy,
    StaticResolver,
    check_host,
    classify_address,
    classify_hostname,
    literal_address,
    numeric_ipv4,
)

BLOCKED_ADDRESSES = {
    "169.254.169.254": "cloud metadata",
    "169.254.170.2": "metadata",
    "100.100.100.200": "metadata",
    "fd00:ec2::254": "metadata",
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.168.1.1": "private",
    "100.64.0.1": "CGNAT",
    "169.254.1.1": "link-local",
    "fe80::1": "link-local",
    "fd00::1": "unique local",
    "fc00::5": "unique local",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.7": "documentation",
    "198.18.0.1": "benchmarking",
    "2001:db8::1": "documentation",
    # wrapped IPv4: mapped, NAT64, 6to4 — judged by the IPv4 address they carry
    "::ffff:127.0.0.1": "loopback",
    "::ffff:169.254.169.254": "metadata",
    "::ffff:10.0.0.1": "private",
    "64:ff9b::7f00:1": "loopback",
    "64:ff9b::a9fe:a9fe": "metadata",
    "2002:7f00:1::": "loopback",
}


@pytest.mark.parametrize(("address", "expected"), sorted(BLOCKED_ADDRESSES.items()))
def test_blocked_address_classes(address: str, expected: str) -> None:
    label = classify_address(address)
    assert label is not None and expected in label


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "172.32.0.1",
                                     "100.128.0.1", "11.0.0.1"])
def test_public_addresses_pass(address: str) -> None:
    assert classify_address(address) is None


@pytest.mark.parametrize(("spelling", "dotted"), [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("0x7f.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0", "0.0.0.0"),
    ("2852039166", "169.254.169.254"),
])
def test_numeric_ipv4_forms_are_normalised(spelling: str, dotted: str) -> None:
    assert numeric_ipv4(spelling) == dotted
    assert literal_address(spelling) == dotted


@pytest.mark.parametrize("host", ["example.com", "deadbeef.com", "abc", "1.2.3.4.5", "0xzz"])
def test_names_are_not_numeric(host: str) -> None:
    assert numeric_ipv4(host) is None


@pytest.mark.parametrize(("host", "expected"), [
    ("metadata.google.internal", "metadata"), ("METADATA.GOOGLE.INTERNAL.", "metadata"),
    ("localhost", "loopback"), ("foo.localhost", "loopback"),
    ("host.docker.internal", "container host"), ("api.default.svc.cluster.local", "cluster"),
])
def test_blocked_hostnames(host: str, expected: str) -> None:
    label = classify_hostname(host)
    assert label is not None and expected in label


async def test_any_bad_address_refuses_the_host() -> None:
    resolver = StaticResolver({"mixed.test": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(Blocked) as info:
        await check_host("mixed.test", 80, FetchPolicy(), resolver)
    assert info.value.address == "10.0.0.7" and info.value.address_class == "private address"
    assert "mixed.test resolves to it" in info.value.reason


async def test_public_host_is_pinned_to_its_checked_address() -> None:
    resolver = StaticResolver({"news.example": ["93.184.216.34", "2606:2800:220:1::1"]})
    check = await check_host("news.example", 443, FetchPolicy(), resolver)
    assert check.pinned == "93.184.216.34" and check.allowed_by is None
    assert resolver.calls == ["news.example"]


async def test_blocked_hostname_is_refused_before_any_lookup() -> None:
    resolver = StaticResolver({"metadata.google.internal": ["93.184.216.34"]})
    with pytest.raises(Blocked, match="cloud metadata hostname"):
        await check_host("metadata.google.internal", 80, FetchPolicy(), resolver)
    assert resolver.calls == []


async def test_literal_addresses_skip_the_resolver() -> None:
    resolver = StaticResolver({})
    with pytest.raises(Blocked, match="127.0.0.1 is a loopback address"):
        await check_host("2130706433", 80, FetchPolicy(), resolver)
    assert resolver.calls == []


async def test_unresolvable_host_fails_closed() -> None:
    with pytest.raises(Blocked) as info:
        await check_host("nowhere.test", 80, FetchPolicy(), StaticResolver({}))
    assert info.value.address_class == "unresolvable"


async def test_allow_private_admits_intranet_but_never_loopback_or_metadata() -> None:
    policy = FetchPolicy(allow_private=True)
    resolver = StaticResolver({"wiki.corp": ["10.2.3.4"], "meta.corp": ["169.254.169.254"],
                               "self.corp": ["127.0.0.1"]})
    check = await check_host("wiki.corp", 80, policy, resolver)
    assert check.allowed_by == "allow_private"
    for host in ("meta.corp", "self.corp"):
        with pytest.raises(Blocked):
            await check_host(host, 80, policy, resolver)


async def test_allow_hosts_is_exact_or_wildcard_and_still_resolves() -> None:
    policy = FetchPolicy(allow_hosts=("news.test", "*.corp.test"))
    resolver = StaticResolver({"news.test": ["127.0.0.1"], "a.corp.test": ["10.0.0.1"],
                               "evilnews.test": ["127.0.0.1"], "corp.test": ["10.0.0.1"]})
    assert (await check_host("news.test", 80, policy, resolver)).allowed_by == "allow_hosts"
    assert (await check_host("a.corp.test", 80, policy, resolver)).pinned == "10.0.0.1"
    for host in ("evilnews.test", "corp.test"):
        with pytest.raises(Blocked):
            await check_host(host, 80, policy, resolver)
    assert "news.test" in resolver.calls  # allow-listed hosts are resolved (and pinned) too
