"""The notifier's HTTP transport against real servers on loopback: TLS to the checked
address with the name kept for SNI, Host and the certificate check; no redirects;
capped responses."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flagsched.notifier.errors import Unreachable
from flagsched.notifier.guard import Guard
from flagsched.notifier.sinks.base import Request
from flagsched.notifier.transport import Transport
from tests.support.required import unavailable

NAME = "hooks.flagsched.test"


class _Server:
    """A loopback server answering every POST with ``status``, ``headers`` and ``body``."""

    def __init__(
        self,
        status: int = 200,
        headers: dict[str, str] | None = None,
        body: bytes = b"ok",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                server.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        unavailable("openssl is needed to make a test certificate")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-subj",
            f"/CN={NAME}",
            "-addext",
            f"subjectAltName=DNS:{NAME}",
        ],
        check=True,
        capture_output=True,
    )
    return key, crt


def _to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_tls_goes_to_the_checked_address_with_the_name_for_sni_host_and_certificate(cert):
    key, crt = cert
    seen_sni: list[str | None] = []
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(crt, key)
    tls.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    server = _Server(tls=tls)
    guard = Guard(allow_insecure=True, resolver=_to_loopback)  # loopback allowed for the test
    transport = Transport(guard, ca_file=crt)
    try:
        response = transport.send(Request.post_json(f"https://{NAME}:{server.port}/x", {"a": 1}))
        with pytest.raises(Unreachable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            # the same address under another name: the certificate does not match it
            transport.send(Request.post_json(f"https://other.flagsched.test:{server.port}/x", {}))
    finally:
        transport.close()
        server.close()
    assert response.status == 200
    assert server.requests[0]["host"] == f"{NAME}:{server.port}"
    assert seen_sni[0] == NAME
    assert len(server.requests) == 1


def test_a_redirect_is_not_followed_and_a_large_response_is_capped():
    target = _Server()
    redirect = _Server(302, {"location": f"http://127.0.0.1:{target.port}/"})
    big = _Server(body=b"x" * 1_000_000)
    transport = Transport(Guard(allow_insecure=True), max_response_bytes=4096)
    try:
        moved = transport.send(Request.post_json(f"http://127.0.0.1:{redirect.port}/", {}))
        capped = transport.send(Request.post_json(f"http://127.0.0.1:{big.port}/", {}))
    finally:
        transport.close()
        for s in (target, redirect, big):
            s.close()
    assert moved.status == 302 and target.requests == []
    assert capped.status == 200 and len(capped.body) == 4096


def test_a_closed_port_is_unreachable_not_a_crash():
    server = _Server()
    port = server.port
    server.close()
    transport = Transport(Guard(allow_insecure=True), timeout_s=2)
    try:
        with pytest.raises(Unreachable):
            transport.send(Request.post_json(f"http://127.0.0.1:{port}/", {}))
    finally:
        transport.close()
