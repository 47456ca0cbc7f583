"""The HTTPS server: ThreadingHTTPServer + ssl on 127.0.0.1, dispatching on the route table."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Importing the route modules registers their routes.
from slmforge.emulator import (  # noqa: F401
    admin, arm_assets, arm_jobs, arm_workspace, keyvault, mlflow_api, registry, runhistory, studio)
from slmforge.emulator.context import Emulator
from slmforge.emulator.routing import Reply, Request, error, router

log = logging.getLogger("slmforge.emulator")
MFE_PREFIX = "/mferp/managementfrontend"  # the SDK's data-plane clients add it; same API behind it


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections give their thread back
    server_version = "slmforge-emulator"
    emu: Emulator

    def log_message(self, fmt: str, *args) -> None:  # the access log goes to our logger, not stderr
        log.info("%s %s", self.address_string(), fmt % args)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        req = Request.parse(self.command, self.path, dict(self.headers.items()), raw)
        if req.path.lower().startswith(MFE_PREFIX):
            req.path = req.path[len(MFE_PREFIX):] or "/"
        if not req.path.startswith("/_emulator"):
            fault = self.emu.faults.draw(self.command)
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault:
                reply = error(int(fault), "TooManyRequests" if fault == "429" else "ServiceUnavailable",
                              "injected fault (slmforge emulator)")
                reply.headers["Retry-After"] = str(self.emu.faults.retry_after)
                if self.emu.faults.retry_after_ms is not None:
                    reply.headers["retry-after-ms"] = str(int(self.emu.faults.retry_after_ms))
                self._send(reply)
                return
        found = router.resolve(self.command, req.path)
        if found is None:
            reply = error(404, "NoSuchRoute", f"the emulator does not implement {self.command} {req.path}")
        else:
            handler, params = found
            with self.emu.lock:
                self.emu.counters[handler.__name__] = self.emu.counters.get(handler.__name__, 0) + 1
            try:
                # Every workspace-scoped route answers only for the emulated workspace.
                scoped = {"sub", "rg", "ws"} <= params.keys()
                reply = (scoped and arm_workspace.check_scope(self.emu, params["sub"], params["rg"], params["ws"])) \
                    or handler(self.emu, req, **params)
            except Exception as e:  # a bug here must answer, not hang the SDK
                log.error("%s %s failed:\n%s", self.command, req.path, traceback.format_exc())
                reply = error(500, "EmulatorError", f"{type(e).__name__}: {e}")
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, (bytes, str)):
            data = reply.body.encode() if isinstance(reply.body, str) else reply.body
            ctype = reply.headers.pop("Content-Type", "text/plain")
        else:
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
            ctype = "application/json; charset=utf-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", "emulator")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    ssl_context: ssl.SSLContext

    def get_request(self):
        # The TLS handshake happens on the first read, in the request's own thread: a slow or
        # broken client never blocks the accept loop.
        sock, addr = self.socket.accept()
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def make_server(emu: Emulator, cert: Path, key: Path, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"emu": emu})
    server = _Server(("127.0.0.1", port), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.ssl_context = ctx
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="emulator-http", daemon=True)
    thread.start()
    return thread
