"""A real, programmable HTTP server on 127.0.0.1 for tests (stdlib only).

    with Server() as server:
        server.route("/doc.pdf", b"%PDF-1.4 ...", etag="v1")
        httpx.get(server.url + "/doc.pdf")

Routes match the full path including the query string first, then the path without it.
"""

import dataclasses
import email.utils
import http.server
import json
import socket
import sys
import threading
import traceback

import pytest

CHUNK = 64 * 1024


class Headers(dict):
    """Request headers with lower-cased keys and case-insensitive lookup."""

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


@dataclasses.dataclass
class Request:
    method: str
    path: str  # as sent, including any query string
    headers: Headers
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclasses.dataclass
class _Route:
    body: bytes
    status: int
    headers: dict
    etag: str | None
    last_modified: str | None
    delay: float
    chunk_delay: float
    chunked: bool


class Served:
    """A server on 127.0.0.1 answering with handler_class on a thread, as a context manager.
    Handlers reach their Served as self.server.owner."""

    handler_class = None
    port = 0  # any free port unless a subclass or instance says which

    def __enter__(self):
        self._httpd = _HTTPServer(("127.0.0.1", self.port), self.handler_class)
        self._httpd.owner = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        httpd = self._httpd
        httpd.shutdown()
        httpd.closing.set()  # wakes handlers sleeping in delays and stalls
        # Keep-alive connections would otherwise leave handler threads blocked reading the next request.
        for sock in list(httpd.connections):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        self._thread.join()


class TrackedHandler(http.server.BaseHTTPRequestHandler):
    """Keeps its connection in server.connections, so shutting down can close it."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked transfer, as real servers do

    def setup(self):
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self):
        self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:  # the socket was reset or closed on purpose
            pass

    def log_message(self, format, *args):
        pass

    def _json(self, status, value, headers=None):
        self._send_json_bytes(status, json.dumps(value).encode(), headers)

    def _send_json_bytes(self, status, body, headers=None):
        """An answer with a JSON content type (body need not be valid JSON: faults send broken ones)."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class Server(Served):
    def __init__(self):
        self.url = None
        self.requests = []
        self._routes = {}  # path -> _Route or a handler function
        self._httpd = None
        self._thread = None

    # -- programming the server ------------------------------------------------------------

    def route(self, path, body=b"", status=200, content_type="application/pdf", headers=None,
              etag=None, last_modified=None, delay=0.0, chunk_delay=0.0, chunked=False):
        if etag is not None and not etag.startswith(('"', 'W/"')):
            etag = f'"{etag}"'
        if isinstance(last_modified, (int, float)):
            last_modified = email.utils.formatdate(last_modified, usegmt=True)
        all_headers = {"Content-Type": content_type} if content_type else {}
        all_headers.update(headers or {})
        self._routes[path] = _Route(body, status, all_headers, etag, last_modified, delay, chunk_delay, chunked)

    def redirect(self, path, to, status=302):
        self.route(path, status=status, content_type=None, headers={"Location": to})

    def handler(self, path, fn):
        """fn(request) -> (status, headers_dict, body_bytes); an exception becomes a 500 with its traceback."""
        self._routes[path] = fn

    def count(self, path):
        return sum(1 for r in self.requests if path in (r.path, r.path.partition("?")[0]))

class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never wait on a handler that is stalled mid-delay

    def __init__(self, *args):
        super().__init__(*args)
        self.closing = threading.Event()
        self.connections = set()

    def handle_error(self, request, client_address):
        # Clients hanging up early (timeouts, size caps) and our own shutdown are expected, not errors.
        if isinstance(sys.exc_info()[1], ConnectionError) or self.closing.is_set():
            return
        super().handle_error(request, client_address)


class _Handler(TrackedHandler):

    def _dispatch(self):
        owner = self.server.owner
        request = Request(self.command, self.path, Headers((k.lower(), v) for k, v in self.headers.items()),
                          self._read_body())
        owner.requests.append(request)
        target = owner._routes.get(self.path) or owner._routes.get(self.path.partition("?")[0])
        if target is None:
            self._send(404, {"Content-Type": "text/plain"}, f"not found: {self.path}\n".encode())
        elif isinstance(target, _Route):
            self._serve_route(target, request)
        else:
            try:
                status, headers, body = target(request)
            except Exception:
                status, headers, body = 500, {"Content-Type": "text/plain"}, traceback.format_exc().encode()
            self._send(status, headers, body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve_route(self, route, request):
        if self.server.closing.wait(route.delay):
            return
        headers = dict(route.headers)
        if route.etag:
            headers["ETag"] = route.etag
        if route.last_modified:
            headers["Last-Modified"] = route.last_modified
        if route.status == 200 and _not_modified(route, request.headers):
            self._send(304, headers, None)
        else:
            self._send(route.status, headers, route.body, route.chunk_delay, route.chunked)

    def _send(self, status, headers, body, chunk_delay=0.0, chunked=False):
        """body None means no body and no Content-Length (304)."""
        self.send_response(status)
        names = {k.lower() for k in headers}
        for name, value in headers.items():
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif body is not None and "content-length" not in names:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body is None or self.command == "HEAD":
            return
        for i in range(0, len(body), CHUNK):
            if i and self.server.closing.wait(chunk_delay):
                return
            piece = body[i:i + CHUNK]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


def _not_modified(route, headers):
    # RFC 7232 section 6: If-None-Match, when present, takes precedence over If-Modified-Since.
    if "If-None-Match" in headers:
        tags = {t.strip().removeprefix("W/") for t in headers["If-None-Match"].split(",")}
        return route.etag is not None and ("*" in tags or route.etag.removeprefix("W/") in tags)
    if "If-Modified-Since" in headers and route.last_modified:
        try:
            since = email.utils.parsedate_to_datetime(headers["If-Modified-Since"])
        except (TypeError, ValueError):
            return False
        return email.utils.parsedate_to_datetime(route.last_modified) <= since
    return False


@pytest.fixture
def http_server():
    """A started Server; shut down after the test."""
    with Server() as server:
        yield server


Server.handler_class = _Handler
