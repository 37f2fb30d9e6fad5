"""Where the node may send requests its callers ask for (job callbacks): never into
the node's own network unless its operator allows it.

A URL is refused when it is not ``http``/``https``, carries credentials, or names, or
resolves to, an address that is not globally routable: loopback, link-local (the cloud
metadata service ``169.254.169.254`` among them), private (``fd00:ec2::254`` too),
shared, reserved, multicast or unspecified, IPv4 written inside IPv6 included. The
operator's allow-list (``YUNNAO_CALLBACK_ALLOW``: networks such as ``10.20.0.0/16``,
addresses, host names, or ``*.example.org`` for a domain's hosts) opens exceptions.

The check runs when a callback URL is given, and again for every delivery, after
resolving its host name. The delivery then connects to the address that was checked
(:meth:`OutboundGuard.pinned`), with the original host name in ``Host`` and in TLS
(SNI and certificate check), so a name that resolves elsewhere by the time of the
connection (DNS rebinding) cannot lead it inside.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Named for the reason a refusal gives; link-local and private cover them too.
METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class Refused(Exception):
    """A URL the node will not send to; ``str()`` says why."""


class Unresolved(Refused):
    """A host name that does not resolve (now: a later attempt may find it)."""


def parse_allow(entries: Iterable[str]) -> tuple[tuple[IPNetwork, ...], tuple[str, ...]]:
    """An allow-list as networks and host names (``*.domain`` for its hosts); raises
    ValueError for an entry that is neither."""
    networks: list[IPNetwork] = []
    hosts: list[str] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = entry[2:] if entry.startswith("*.") else entry
        labels = name.split(".")
        if not all(
            label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels
        ):
            raise ValueError(
                f"callback allow-list entry {raw!r} is not a network, an address or a host name"
            )
        hosts.append(entry)
    return tuple(networks), tuple(hosts)


def _plain(address: IPAddress) -> IPAddress:
    """IPv4 written inside IPv6 (mapped, 6to4, Teredo) as the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def why_internal(address: IPAddress) -> str | None:
    """Why ``address`` is inside the network (None: a public address)."""
    plain = _plain(address)
    if address in METADATA or plain in METADATA:
        return "a cloud metadata address"
    for what, test in (
        ("a loopback address", plain.is_loopback),
        ("an unspecified address", plain.is_unspecified),
        ("a link-local address", plain.is_link_local),
        ("a multicast address", plain.is_multicast),
        ("a private address", plain.is_private),
        ("a reserved address", plain.is_reserved),
    ):
        if test:
            return what
    if not plain.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to say (``url``)."""

    url: httpx.URL
    address: str

    def request(self) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        """The URL to the checked address, its ``Host`` header and request extensions
        (TLS keeps checking the original host name)."""
        pinned = self.url.copy_with(host=self.address)
        extensions: dict[str, Any] = {}
        if self.url.scheme == "https":
            extensions["sni_hostname"] = self.url.host
        return pinned, {"Host": self.url.netloc.decode("ascii")}, extensions


class OutboundGuard:
    """The node's rule for outbound URLs, with its operator's exceptions."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.networks, self.hosts = parse_allow(allow)

    def _host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.hosts:
            if entry.startswith("*."):
                if host.endswith(entry[1:]):
                    return True
            elif host == entry:
                return True
        return False

    def _address_allowed(self, address: IPAddress) -> bool:
        return any(address in n or _plain(address) in n for n in self.networks)

    def check_syntax(self, url: str) -> httpx.URL:
        """The parsed URL, or :class:`Refused` for what no resolution can make right."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise Refused(f"not a valid URL ({exc})") from None
        if parsed.scheme not in ("http", "https"):
            raise Refused("only http and https URLs are called back")
        if not parsed.host:
            raise Refused("the URL names no host")
        if parsed.userinfo:
            raise Refused("the URL must not carry credentials")
        return parsed

    def check_address(self, host: str, address: IPAddress) -> None:
        """Raise :class:`Refused` when ``address`` (``host`` resolved) is internal and
        not allowed."""
        why = why_internal(address)
        if why is None or self._address_allowed(address) or self._host_allowed(host):
            return
        shown = host if host == str(address) else f"{host} ({address})"
        raise Refused(
            f"{shown} is {why}; callbacks reach only public addresses unless this node's "
            "operator allows it (YUNNAO_CALLBACK_ALLOW)"
        )

    def resolve(self, url: str) -> Target:
        """Check ``url``, resolve its host and check every address it has (blocking:
        call from a worker thread); the address to connect to."""
        parsed = self.check_syntax(url)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            self.check_address(host, literal)
            return Target(parsed, str(literal))
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise Unresolved(f"{host} does not resolve ({exc})") from None
        addresses: list[IPAddress] = []
        for info in infos:
            text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone
            address = ipaddress.ip_address(text)
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise Unresolved(f"{host} does not resolve")
        # Every address must pass: a name with one public and one internal address
        # would otherwise reach inside on some connections.
        for address in addresses:
            self.check_address(host, address)
        return Target(parsed, str(addresses[0]))

    async def aresolve(self, url: str) -> Target:
        """:meth:`resolve` off the event loop."""
        return await anyio.to_thread.run_sync(self.resolve, url)
