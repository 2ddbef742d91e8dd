"""Real servers on loopback for the tests: the OCR app under uvicorn, and a plain file server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI


def _bound_socket() -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every keep-alive request to a test server waits ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class RunningApp:
    app: FastAPI
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 300), **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def start_app(app: FastAPI, *, wait_healthy: bool = True, timeout_s: float = 180) -> RunningApp:
    """Serve ``app`` on 127.0.0.1 in a thread; wait until /health says the models are loaded."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    running = RunningApp(app=app, url=f"http://127.0.0.1:{port}", server=server, thread=thread)
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            running.stop()
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    if wait_healthy:
        with running.client() as client:
            while client.get("/health").status_code != 200:
                if time.monotonic() > deadline:
                    running.stop()
                    raise RuntimeError("the OCR service did not become healthy")
                time.sleep(0.2)
    return running


Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class FileServer:
    """A plain HTTP server on 127.0.0.1 whose routes are functions of the request handler."""

    routes: dict[str, Handler]
    httpd: ThreadingHTTPServer
    thread: threading.Thread
    hits: list[str]

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def start_file_server(routes: dict[str, Handler]) -> FileServer:
    hits: list[str] = []

    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            route = routes.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404)
                return
            route(self)

        def log_message(self, *args: Any) -> None:
            pass

    class _Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that hangs up early (the fetcher's size or time limit) is expected here.
            pass

    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return FileServer(routes=routes, httpd=httpd, thread=thread, hits=hits)


def send_bytes(data: bytes, content_type: str = "application/pdf") -> Handler:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return handle


def redirect_to(location: str, status: int = 302) -> Handler:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return handle


def wait_until_healthy(client: httpx.Client, timeout_s: float) -> None:
    """Poll ``/health`` of a service started as its own process until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not become healthy")
        time.sleep(0.5)
