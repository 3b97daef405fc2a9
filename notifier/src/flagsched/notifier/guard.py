"""The SSRF guard: every outgoing request is checked here before a socket is opened.

* https only; plain http only to loopback and only with FLAGSCHED_NOTIFY_ALLOW_INSECURE
  (for tests);
* the host is resolved once and every address it resolves to must be public:
  private, loopback, link-local, shared (CGNAT), multicast, reserved and unspecified
  addresses are refused unless the rules file allow-lists their network
  (``network.allow``); cloud-metadata addresses are refused always;
* the request then goes to the checked address (the name is kept for the Host header
  and TLS), so a second lookup cannot rebind it. Redirects are never followed and
  responses are capped (transport.py).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from flagsched.notifier.errors import Refused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host, port -> the addresses it resolves to.
Resolver = Callable[[str, int], list[str]]

#: Instance-metadata endpoints (AWS, GCP and Azure share 169.254.169.254; AWS IPv6,
#: ECS task metadata, Alibaba, Oracle). Never allowed, whatever the allow-list says.
METADATA = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",
        "169.254.170.2/32",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "192.0.0.192/32",
    )
)


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), TCP addresses only."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Refused(f"{host}: does not resolve ({exc.strerror})") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """A checked request target: the URL to connect to (the address in place of the
    name) and the name for the Host header and TLS (SNI and certificate check)."""

    url: httpx.URL
    host: str
    address: IPAddress

    @property
    def connect_url(self) -> httpx.URL:
        """The URL with the checked address as its host."""
        return self.url.copy_with(host=str(self.address))


class Guard:
    """Checks URLs; ``resolver`` is injectable so tests can resolve a name to any
    address without a DNS server (and without sending it anything)."""

    def __init__(
        self,
        *,
        allow_insecure: bool = False,
        allow: Sequence[IPNetwork] = (),
        resolver: Resolver = system_resolver,
    ) -> None:
        self.allow_insecure = allow_insecure
        self._allow = tuple(allow)
        self._resolve = resolver

    def check(self, raw_url: str) -> Target:
        """The target of ``raw_url``, or Refused saying why (the URL is not in the
        message: a Slack webhook URL is a secret)."""
        try:
            url = httpx.URL(raw_url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise Refused(f"not a valid URL: {exc}") from exc
        if url.scheme not in ("https", "http"):
            raise Refused(f"scheme {url.scheme!r} is not allowed: use https")
        if url.userinfo:
            raise Refused("credentials in the URL are not allowed")
        host = url.host
        if not host:
            raise Refused("the URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = [_parse(a) for a in self._addresses(host, port)]
        if not addresses:
            raise Refused(f"{host}: resolves to no address")
        for address in addresses:
            self._check_address(host, address)
        if url.scheme == "http" and not (
            self.allow_insecure and all(a.is_loopback for a in addresses)
        ):
            raise Refused(
                f"{host}: plain http is allowed only to loopback with"
                " FLAGSCHED_NOTIFY_ALLOW_INSECURE (tests); use https"
            )
        return Target(url, host, addresses[0])

    def _addresses(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return self._resolve(host, port)

    def _check_address(self, host: str, address: IPAddress) -> None:
        if any(address in net for net in METADATA):
            raise Refused(f"{host}: resolves to {address}, a cloud metadata address")
        if address.is_global and not address.is_multicast:
            return
        if any(address in net for net in self._allow if net.version == address.version):
            return
        if address.is_loopback and self.allow_insecure:
            return
        raise Refused(
            f"{host}: resolves to {address}, a {_kind(address)} address"
            " (allow its network in the rules file's network.allow if it is meant)"
        )


def _parse(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return address


def _kind(address: IPAddress) -> str:
    for name in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    return "non-public"
