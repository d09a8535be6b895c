"""The latent explorer's HTTP server (standard library ``ThreadingHTTPServer``).

Routes::

    GET  /                    the page (web/index.html)
    GET  /static/<name>       a file of the package's web folder, by exact name
    GET  /api/info[?run=R]    latent family and shape, encoded test points, 2-D projection
    POST /api/decode          {"run"?: R, "z": [...]}                 -> {"image": data URI}
    POST /api/interpolate     {"run"?: R, "a": [...], "b": [...], "steps"?: n,
                               "mode"?: "linear"|"slerp"}            -> {"image": strip}

Static files are read into memory at start-up and served only from that table, so no
request path ever reaches the file system (no traversal). Bad requests get 400 and a JSON
``{"error": message}`` (JSON nested too deeply to parse included); any method but GET, HEAD
and POST gets 405 with an ``Allow`` header; each connection has a socket timeout, so a slow
or stalled client cannot hang the server. No client input yields a 5xx.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vaelab.console import LOGGER
from vaelab.viz.explorer.session import BadRequest, LoadedModel

MAX_BODY = 256 * 1024  # bytes of a request body
MIME = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
        ".ico": "image/x-icon"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class HTTPProblem(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def load_static() -> dict[str, tuple[bytes, str]]:
    """{file name: (bytes, content type)} for the files of ``vaelab/web``."""
    files: dict[str, tuple[bytes, str]] = {}
    web = resources.files("vaelab.viz") / "web"
    for entry in web.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in MIME:
            files[entry.name] = (entry.read_bytes(), MIME[suffix])
    if "index.html" not in files:
        raise RuntimeError("vaelab/web/index.html is missing from the installed package; "
                           "reinstall vaelab")
    return files


class Explorer:
    """The runs being explored (the first one is the default) and the static files."""

    def __init__(self, models: list[LoadedModel]):
        if not models:
            raise ValueError("the explorer needs at least one run")
        self.models = {m.name: m for m in models}
        self.default = models[0].name
        self.static = load_static()

    def model(self, name: Any) -> LoadedModel:
        if name is None:
            return self.models[self.default]
        if not isinstance(name, str) or name not in self.models:
            raise BadRequest(f"unknown run {name!r:.60}; loaded runs: "
                             f"{', '.join(self.models)}")
        return self.models[name]

    def info(self, name: Any) -> dict[str, Any]:
        return {**self.model(name).info(), "runs": list(self.models)}


def make_handler(explorer: Explorer, *, request_timeout: float,
                 check_host: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body are two writes: with Nagle's algorithm the second waits for the
        # client's delayed ACK, adding ~40 ms to every kept-alive request
        disable_nagle_algorithm = True
        timeout = request_timeout  # socket timeout: a stalled client cannot hold a thread
        server_version = "vaelab-explorer"
        sys_version = ""

        # -- plumbing ----------------------------------------------------------------------
        def log_message(self, format: str, *args: Any) -> None:
            if getattr(self.server, "verbose", False):
                sys.stderr.write(f"explorer: {self.address_string()} {format % args}\n")

        def send_body(self, status: int, body: bytes, content_type: str,
                      headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", CSP)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_json(self, status: int, payload: dict[str, Any],
                      headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload, allow_nan=False).encode()
            self.send_body(status, body, "application/json", headers)

        def handle_safely(self, route) -> None:
            try:
                if check_host:
                    self.check_host()
                route()
            except BadRequest as err:
                self.send_json(400, {"error": str(err)})
            except HTTPProblem as err:
                self.send_json(err.status, {"error": str(err)}, err.headers)
            except (ConnectionError, TimeoutError):
                self.close_connection = True
            except RecursionError:
                with contextlib.suppress(OSError):
                    self.send_json(400, {"error": "request nested too deeply"})
            except Exception as err:  # report it and keep serving
                sys.stderr.write(f"explorer: internal error on {self.command} {self.path}: "
                                 f"{type(err).__name__}: {err}\n")
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.send_json(500, {"error": f"internal error: {type(err).__name__}"})

        def check_host(self) -> None:
            """Refuse other Host names: a web page cannot reach us through DNS rebinding."""
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
            if host not in LOOPBACK:
                raise BadRequest(f"unexpected Host header {host!r:.60}; open the explorer at "
                                 "http://127.0.0.1:PORT/")

        def read_json(self) -> dict[str, Any]:
            length = self.headers.get("Content-Length")
            if length is None:
                raise BadRequest("a POST needs a Content-Length header and a JSON body")
            try:
                size = int(length)
            except ValueError:
                raise BadRequest(f"bad Content-Length {length!r:.40}") from None
            if size < 0:
                raise BadRequest(f"bad Content-Length {length!r:.40}")
            if size > MAX_BODY:
                self.close_connection = True
                raise HTTPProblem(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                  f"request body of {size} bytes is larger than {MAX_BODY}")
            try:
                raw = self.rfile.read(size)
            except TimeoutError:
                self.close_connection = True
                raise BadRequest(f"request body not received within {request_timeout:g} s "
                                 f"(Content-Length {size})") from None
            if len(raw) < size:
                self.close_connection = True
                raise BadRequest(f"request body ended after {len(raw)} of {size} bytes")
            try:
                body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
            except BadRequest:
                raise
            except RecursionError:
                raise BadRequest("body is nested too deeply; send a flat JSON object such as "
                                 "{\"z\": [0.5, -1.0]}") from None
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
                raise BadRequest(f"body is not valid JSON: {str(err)[:120]}") from None
            if not isinstance(body, dict):
                raise BadRequest("body must be a JSON object such as {\"z\": [0.5, -1.0]}")
            return body

        def split_path(self) -> tuple[str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            try:
                return parts.path, parse_qs(parts.query, max_num_fields=10)
            except ValueError:
                raise BadRequest("too many query parameters") from None

        def send_error(self, code: int, message: str | None = None,
                       explain: str | None = None) -> None:
            # the standard library answers an HTTP version it does not speak with 505: that
            # is the client's request, so a 400 (no client input gets a 5xx)
            if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
                code, message = HTTPStatus.BAD_REQUEST, "unsupported HTTP version; use HTTP/1.1"
            super().send_error(code, message, explain)

        def __getattr__(self, name: str):
            # any other method (PUT, DELETE, PATCH, OPTIONS, TRACE, ...): 405, not 501
            if name.startswith("do_"):
                return self.refuse_method
            raise AttributeError(name)

        def refuse_method(self) -> None:
            self.close_connection = True  # a body we do not read must not become a request
            self.handle_safely(self.route_refused)

        def route_refused(self) -> None:
            path, _ = self.split_path()
            allow = "POST" if path in ("/api/decode", "/api/interpolate") else "GET, HEAD"
            raise HTTPProblem(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command[:20]} is not "
                              f"allowed here; {path[:80]} takes {allow}", {"Allow": allow})

        # -- routes ------------------------------------------------------------------------
        def do_GET(self) -> None:
            self.handle_safely(self.route_get)

        def do_HEAD(self) -> None:
            self.handle_safely(self.route_get)

        def do_POST(self) -> None:
            self.handle_safely(self.route_post)

        def route_get(self) -> None:
            path, query = self.split_path()
            if path in ("/", "/index.html"):
                return self.send_static("index.html")
            if path.startswith("/static/"):
                return self.send_static(path[len("/static/"):])
            if path == "/api/info":
                run = query.get("run", [None])[0]
                return self.send_json(200, explorer.info(run))
            if path in ("/api/decode", "/api/interpolate"):
                raise HTTPProblem(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST with a "
                                  "JSON body", {"Allow": "POST"})
            raise HTTPProblem(HTTPStatus.NOT_FOUND, f"no such page: {path[:80]}")

        def route_post(self) -> None:
            path, _ = self.split_path()
            actions = {"/api/decode": "decode", "/api/interpolate": "interpolate"}
            if path not in actions:
                if path == "/api/info" or path == "/" or path.startswith("/static/"):
                    raise HTTPProblem(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET",
                                      {"Allow": "GET"})
                raise HTTPProblem(HTTPStatus.NOT_FOUND, f"no such endpoint: {path[:80]}")
            body = self.read_json()
            model = explorer.model(body.get("run"))
            self.send_json(200, getattr(model, actions[path])(body))

        def send_static(self, name: str) -> None:
            entry = explorer.static.get(name)  # exact names only: never a file system path
            if entry is None:
                raise HTTPProblem(HTTPStatus.NOT_FOUND, f"no such file: {name[:80]}")
            body, mime = entry
            self.send_body(200, body, mime)

    return Handler


def _reject_constant(name: str) -> None:
    raise BadRequest(f"{name} is not allowed; send finite numbers")


class ExplorerServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung connection never blocks shutdown
    allow_reuse_address = True
    verbose = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a closed tab, a cancelled fetch, a timeout)
        is one log line, not socketserver's traceback; anything else keeps the traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            host = client_address[0] if isinstance(client_address, tuple) else client_address
            LOGGER.info(f"explorer: client {host} went away "
                        f"({type(error).__name__}: {error.strerror or error})")
            return
        super().handle_error(request, client_address)


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 0, *,
                request_timeout: float = 10.0) -> ExplorerServer:
    """Bind (``port=0`` picks a free port: ``server.server_address``); call serve_forever."""
    handler = make_handler(explorer, request_timeout=request_timeout,
                           check_host=host in LOOPBACK)
    return ExplorerServer((host, port), handler)


def serve_in_thread(server: ExplorerServer) -> threading.Thread:
    """Run ``server`` in a daemon thread (tests, benchmarks); stop with server.shutdown()."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    return thread
