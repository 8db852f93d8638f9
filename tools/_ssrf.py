"""The SSRF guard for `web_fetch`: which hosts and addresses a fetch may connect to.

Why explicit CIDR tables instead of ``ipaddress.is_private``: Python's own tables changed in
2024 (CVE-2024-4032) and IPv4-mapped / NAT64 forms are classified differently from the IPv4
address they carry, so a guard built on the flags drifts with the interpreter. The tables below
follow the IANA special-purpose address registries (IPv4 and IPv6, RFC 6890 and its updates)
and name the class of every block, so the
error a model (and the ledger) sees says *why* an address was refused.

The guard fails closed: a host is refused if ANY of its resolved addresses is bad, a resolver
error refuses the fetch, and nothing here reads environment variables. Overrides
(`FetchPolicy.allow_hosts`, `allow_private`) come only from the task and are reported with
each decision so they end up in the ledger.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "AddressCheck",
    "Blocked",
    "FetchPolicy",
    "Resolver",
    "StaticResolver",
    "SystemResolver",
    "check_host",
    "classify_address",
    "classify_hostname",
    "numeric_ipv4",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud metadata endpoints (AWS/GCP/Azure 169.254.169.254, ECS task metadata, AWS IPv6, Alibaba).
METADATA_ADDRESSES: dict[str, str] = {
    "169.254.169.254": "link-local / cloud metadata address",
    "169.254.170.2": "link-local / cloud (ECS) metadata address",
    "fd00:ec2::254": "cloud (AWS IPv6) metadata address",
    "100.100.100.200": "cloud (Alibaba) metadata address",
}

#: (network, class) — checked in order, first match names the class.
_BLOCKED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified / 'this network' address"),
    ("10.0.0.0/8", "private address"),
    ("100.64.0.0/10", "carrier-grade NAT (CGNAT) address"),
    ("127.0.0.0/8", "loopback address"),
    ("169.254.0.0/16", "link-local address"),
    ("172.16.0.0/12", "private address"),
    ("192.0.0.0/24", "IETF protocol assignment (reserved) address"),
    ("192.0.2.0/24", "documentation (TEST-NET-1) address"),
    ("192.88.99.0/24", "6to4 relay anycast (reserved) address"),
    ("192.168.0.0/16", "private address"),
    ("198.18.0.0/15", "benchmarking (reserved) address"),
    ("198.51.100.0/24", "documentation (TEST-NET-2) address"),
    ("203.0.113.0/24", "documentation (TEST-NET-3) address"),
    ("224.0.0.0/4", "multicast address"),
    ("240.0.0.0/4", "reserved / broadcast address"),
    ("::/128", "unspecified address"),
    ("::1/128", "loopback address"),
    ("::/96", "IPv4-compatible (deprecated) address"),
    ("100::/64", "discard-only (reserved) address"),
    ("2001:db8::/32", "documentation address"),
    ("fc00::/7", "private (unique local) address"),
    ("fe80::/10", "link-local address"),
    ("fec0::/10", "site-local (deprecated) address"),
    ("ff00::/8", "multicast address"),
)
_BLOCKED_NETS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), label) for net, label in _BLOCKED)

#: Classes that `allow_private` (intranet use) lets through; loopback and metadata never.
PRIVATE_CLASSES = frozenset({"private address", "private (unique local) address",
                             "carrier-grade NAT (CGNAT) address"})

_NAT64 = ipaddress.ip_network("64:ff9b::/96")

#: Hostnames refused before any DNS lookup (exact names, and suffixes starting with a dot).
BLOCKED_HOSTNAMES: dict[str, str] = {
    "metadata.google.internal": "cloud metadata hostname",
    "metadata": "cloud metadata hostname",
    "instance-data": "cloud metadata hostname",
    "localhost": "loopback hostname",
    "host.docker.internal": "container host hostname",
    "gateway.docker.internal": "container host hostname",
}
BLOCKED_SUFFIXES: dict[str, str] = {
    ".localhost": "loopback hostname",
    ".svc.cluster.local": "cluster-internal hostname",
    ".internal": "internal hostname",
}

_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)


class Blocked(Exception):
    """A host or address the policy refuses. `address_class` names why."""

    def __init__(self, host: str, reason: str, address_class: str,
                 address: str | None = None) -> None:
        self.host, self.reason = host, reason
        self.address_class, self.address = address_class, address
        #: the request chain up to the refused hop (filled in by the fetcher)
        self.hops: list[Any] = []
        super().__init__(reason)


@dataclass(frozen=True)
class FetchPolicy:
    """Who may be fetched. Built from the task's ``fetch`` settings; never from env vars."""

    allow_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    schemes: frozenset[str] = field(default_factory=lambda: frozenset({"http", "https"}))

    def host_allowed(self, host: str) -> bool:
        """True if `host` is explicitly allow-listed (exact, or ``*.suffix`` patterns)."""
        host = host.lower().rstrip(".")
        for pattern in self.allow_hosts:
            pattern = pattern.lower().rstrip(".")
            if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
                return True
        return False

    def describe(self) -> dict[str, object]:
        """The overrides in force, for the ledger."""
        return {"allow_hosts": list(self.allow_hosts), "allow_private": self.allow_private}


@dataclass(frozen=True)
class AddressCheck:
    """A host that passed: the addresses it may be connected to (the first one is pinned)."""

    host: str
    addresses: tuple[str, ...]
    allowed_by: str | None = None  # "allow_hosts" / "allow_private" when an override applied

    @property
    def pinned(self) -> str:
        return self.addresses[0]


class Resolver(Protocol):
    """Turns a hostname into IP address strings. Tests inject a `StaticResolver`."""

    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The OS resolver via ``getaddrinfo`` on the running loop (off the loop's thread)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class StaticResolver:
    """A resolver from a fixed table (tests, air-gapped setups). Unknown names fail."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self.table = {k.lower(): list(v) for k, v in table.items()}
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        try:
            return list(self.table[host.lower()])
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test table") from None


def unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address carried inside IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 forms."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def classify_address(address: str | IPAddress) -> str | None:
    """The class that makes `address` unsafe to fetch, or None for a public address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    inner = unwrap(ip)
    for candidate in (ip, inner) if inner != ip else (ip,):
        label = METADATA_ADDRESSES.get(str(candidate))
        if label:
            return label
    for net, label in _BLOCKED_NETS:
        if inner.version == net.version and inner in net:
            return label if inner == ip else f"{label} ({inner} inside the IPv6 form {ip})"
    return None


def classify_hostname(host: str) -> str | None:
    """The class that makes a hostname unsafe before any lookup, or None."""
    name = host.lower().rstrip(".")
    if name in BLOCKED_HOSTNAMES:
        return BLOCKED_HOSTNAMES[name]
    for suffix, label in BLOCKED_SUFFIXES.items():
        if name.endswith(suffix):
            return label
    return None


def numeric_ipv4(host: str) -> str | None:
    """Normalise the decimal/octal/hex IPv4 spellings ``inet_aton`` accepts (2130706433,
    0177.0.0.1, 0x7f000001, 127.1) to dotted form, so they are judged like the address they
    reach; None if `host` is not such a spelling."""
    if not _NUMERIC_HOST.match(host) or not any(c.isdigit() for c in host):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


def literal_address(host: str) -> str | None:
    """The IP address a URL host spells directly (``[::1]``, ``127.0.0.1``, ``0x7f.1``)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return numeric_ipv4(bare)


def _judge(host: str, addresses: Iterable[str], policy: FetchPolicy, literal: bool) -> str | None:
    """Raise Blocked for the first bad address; return the override used, if any."""
    override = None
    for address in addresses:
        label = classify_address(address)
        if label is None:
            continue
        if policy.allow_private and label in PRIVATE_CLASSES:
            override = "allow_private"
            continue
        via = "" if literal else f" ({host} resolves to it)"
        raise Blocked(host, f"{address} is a {label}{via}", label, address)
    return override


async def check_host(host: str, port: int, policy: FetchPolicy,
                     resolver: Resolver) -> AddressCheck:
    """Resolve `host` once and decide; the returned addresses are the only ones to connect to.

    Raises `Blocked` (never returns a partial answer). Explicitly allow-listed hosts skip the
    address classes but are still resolved here, so the connection is pinned all the same.
    """
    literal = literal_address(host)
    allowed = policy.host_allowed(host) or (literal is not None and policy.host_allowed(literal))
    if literal is not None:
        addresses = [literal]
    else:
        label = classify_hostname(host)
        if label is not None and not allowed:
            raise Blocked(host, f"{host} is a {label}", label)
        try:
            addresses = await resolver.resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise Blocked(host, f"{host} could not be resolved ({exc})", "unresolvable") from None
        if not addresses:
            raise Blocked(host, f"{host} resolved to no address", "unresolvable")
        try:
            addresses = [str(ipaddress.ip_address(a.split("%", 1)[0])) for a in addresses]
        except ValueError as exc:
            raise Blocked(host, f"{host} resolved to a bad address ({exc})", "unresolvable") from None
    if allowed:
        return AddressCheck(host, tuple(addresses), "allow_hosts")
    override = _judge(host, addresses, policy, literal is not None)
    return AddressCheck(host, tuple(addresses), override)
