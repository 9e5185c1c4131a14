"""Fault injection for the drills: moto's server, botocore hooks and a fault-injecting HTTP proxy.

Every fault is injected into real boto3 calls on their way to moto's real HTTP server:
- ``Faults`` is a botocore ``before-send`` hook: it answers an attempt with an HTTP error response
  (5xx, SlowDown, Throttling) that never reaches the server, or raises ReadTimeoutError after
  really forwarding the request (the server has it; the client does not know), or raises
  ConnectTimeoutError without sending anything;
- ``FaultProxy`` sits in front of the server for processes we cannot hook (worker processes): it
  forwards requests, or answers the ones a rule picks with 503 SlowDown.
"""
from __future__ import annotations

import http.client
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto_server():
    """moto's server on a free port; returns (server, url)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def moto_url():
    """moto's server for one test module (import this fixture into the module to use it)."""
    server, url = start_moto_server()
    yield url
    server.stop()


_ERROR_BODIES = {
    # S3: REST-XML error document
    "s3": '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected</Message>'
          "<RequestId>drill</RequestId></Error>",
    # SNS: query-protocol error document
    "sns": '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender</Type>'
           "<Code>{code}</Code><Message>injected</Message></Error><RequestId>drill</RequestId></ErrorResponse>",
}


@dataclass
class Faults:
    """A queue of faults for the next attempts of one client; ``attempts`` counts every attempt.

    Each fault is ``("status", code, http_status)``, ``("read_timeout_after_send",)`` or
    ``("connect_timeout",)``; when the queue is empty the attempt goes through untouched.
    """

    service: str
    plan: list[tuple] = field(default_factory=list)
    operation: str = ""  # only this operation (PutObject, Publish); empty: all
    attempts: int = 0
    injected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, client) -> "Faults":
        event = f"before-send.{self.service}" + (f".{self.operation}" if self.operation else "")
        client.meta.events.register_first(event, self._before_send)
        return self

    def _before_send(self, request, **kwargs):
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

        op = kwargs.get("event_name", "").split(".")[-1]
        with self.lock:
            self.attempts += 1
            fault = self.plan.pop(0) if self.plan else None
        if fault is None:
            return None
        self.injected.append(fault[0] if fault[0] != "status" else fault[1])
        if fault[0] == "status":
            body = _ERROR_BODIES[self.service].format(code=fault[1]).encode()
            return AWSResponse(request.url, fault[2], {"Content-Type": "text/xml"}, _Raw(body))
        if fault[0] == "read_timeout_after_send":
            _forward(request)  # the server really gets it; the client hears nothing back
            raise ReadTimeoutError(endpoint_url=request.url)
        if fault[0] == "connect_timeout":
            raise ConnectTimeoutError(endpoint_url=request.url)
        raise AssertionError(f"unknown fault {fault} for {op}")


class _Raw:
    """The raw body an AWSResponse reads: enough of urllib3's response interface."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_):
        yield self.data


def _forward(request) -> int:
    u = urlsplit(request.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    path = u.path + (f"?{u.query}" if u.query else "")
    body = request.body
    if hasattr(body, "read"):
        body = body.read()
    conn.request(request.method, path or "/", body=body, headers=dict(request.headers.items()))
    status = conn.getresponse().status
    conn.close()
    return status


class FaultProxy:
    """An HTTP proxy to moto's server; ``rule(method, path) -> bool`` picks requests to answer 503 SlowDown."""

    def __init__(self, upstream: str, rule: Callable[[str, str], bool] | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.rule = rule or (lambda method, path: False)
        self.requests: list[tuple[str, str, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: paths can hold object keys
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                if proxy.rule(self.command, self.path):
                    proxy.requests.append((self.command, self.path, 503))
                    data = _ERROR_BODIES["s3"].format(code="SlowDown").encode()
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                proxy.requests.append((self.command, self.path, resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _read_chunked(rfile) -> bytes:
    out = b""
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            rfile.readline()
            return out
        out += rfile.read(size)
        rfile.readline()
