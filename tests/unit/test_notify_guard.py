"""The SSRF guard refuses before connecting: names resolving to loopback, link-local
(cloud metadata) and private addresses are refused, and nothing is sent."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from flagsched.notifier.errors import Refused
from flagsched.notifier.guard import Guard
from flagsched.notifier.sinks.base import Request
from flagsched.notifier.transport import Transport


class _Nothing(httpx.BaseTransport):
    """Counts what reaches the network layer; every test expects zero."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        raise AssertionError(f"the guard let a request through to {request.url}")


def _resolving_to(*addresses: str):
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return list(addresses)

    return resolve, asked


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.5",
        "172.16.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:10.0.0.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
    ],
)
def test_a_name_resolving_to_a_non_public_address_is_refused_without_traffic(address):
    resolve, asked = _resolving_to(address)
    network = _Nothing()
    transport = Transport(Guard(resolver=resolve), transport=network)
    with pytest.raises(Refused, match="resolves to"):
        transport.send(Request.post_json("https://hooks.partner.example/x", {"a": 1}))
    assert asked == ["hooks.partner.example"]
    assert network.requests == []


def test_one_bad_address_among_good_ones_is_enough_to_refuse():
    resolve, _ = _resolving_to("93.184.216.34", "10.0.0.1")
    with pytest.raises(Refused, match=r"10\.0\.0\.1"):
        Guard(resolver=resolve).check("https://rebinding.example/")


def test_address_literals_are_checked_too_and_never_resolved():
    resolve, asked = _resolving_to("93.184.216.34")
    guard = Guard(resolver=resolve)
    for url in ("https://127.0.0.1/", "https://[::1]:8443/", "https://169.254.169.254/latest"):
        with pytest.raises(Refused):
            guard.check(url)
    assert asked == []


def test_https_only_and_plain_http_only_to_loopback_when_insecure_is_allowed():
    public, _ = _resolving_to("93.184.216.34")
    with pytest.raises(Refused, match="use https"):
        Guard(resolver=public).check("http://hooks.example.com/")
    with pytest.raises(Refused, match="use https"):
        Guard(resolver=public, allow_insecure=True).check("http://hooks.example.com/")
    with pytest.raises(Refused, match="scheme"):
        Guard(resolver=public).check("ftp://hooks.example.com/")
    with pytest.raises(Refused, match="credentials"):
        Guard(resolver=public).check("https://user:pw@hooks.example.com/")
    with pytest.raises(Refused, match="loopback"):
        Guard().check("http://127.0.0.1:8080/")
    target = Guard(allow_insecure=True).check("http://127.0.0.1:8080/hook")
    assert str(target.connect_url) == "http://127.0.0.1:8080/hook"


def test_the_allow_list_opens_a_private_network_but_never_the_metadata_address():
    resolve, _ = _resolving_to("10.20.3.4")
    allow = [ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("169.254.0.0/16")]
    target = Guard(resolver=resolve, allow=allow).check("https://hooks.internal/x")
    assert str(target.address) == "10.20.3.4"
    assert target.host == "hooks.internal"
    assert target.connect_url.host == "10.20.3.4"
    metadata, _ = _resolving_to("169.254.169.254")
    with pytest.raises(Refused, match="metadata"):
        Guard(resolver=metadata, allow=allow).check("https://hooks.internal/x")


def test_a_refusal_does_not_quote_the_url_which_may_be_a_secret():
    resolve, _ = _resolving_to("10.0.0.1")
    with pytest.raises(Refused) as err:
        Guard(resolver=resolve).check("https://hooks.slack.example/services/T0/B0/s3cr3t")
    assert "s3cr3t" not in str(err.value)
