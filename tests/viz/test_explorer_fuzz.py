"""The explorer under a bounded fuzz: thousands of random and structured bad requests.

No response is a 5xx; every method other than GET/HEAD/POST is 405 with an Allow header;
deeply nested JSON is 400; and after each burst the server still answers a good decode.
Seeded (random.Random(0)) and bounded in time, so it is the same run every time.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import typing

import pytest

from vaelab.viz.explorer import Explorer, LoadedModel, make_server, serve_in_thread
from viz_runs import tiny_run

PATHS = ["/", "/index.html", "/api/decode", "/api/interpolate", "/api/info",
         "/static/app.js", "/static/../../etc/passwd", "/nope", "/api/", "//api/decode"]
WRONG_METHODS = ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO"]
BURSTS, PER_BURST, TIME_BOUND = 5, 400, 90.0  # 2000 requests; seconds for all bursts


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "gaussian", "image")
    srv = make_server(Explorer([LoadedModel("gauss", run, points=20)]), "127.0.0.1", 0,
                      request_timeout=0.25)  # stalled bodies time out fast
    thread = serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def send(server, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int | None, typing.Any]:
    """(status, response); (None, None) when the server closed the connection before
    answering (allowed: e.g. a body larger than it reads)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status, response
    except (ConnectionError, http.client.RemoteDisconnected):
        return None, None
    finally:
        conn.close()


def send_raw(server, data: bytes) -> bytes:
    """Raw bytes on a socket; whatever comes back before the server closes (or 2 s)."""
    sock = socket.create_connection(server.server_address[:2], timeout=2.0)
    out = b""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            out += chunk
    except OSError:  # the server closed first (timeout, reset, not connected)
        pass
    finally:
        sock.close()
    return out


def good_decode(server) -> None:
    status, _ = send(server, "POST", "/api/decode", json.dumps({"z": [0.1, -0.2, 0.3]}).encode(),
                     {"Content-Type": "application/json"})
    assert status == 200


def junk_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(12 if depth < 3 else 8)
    return [lambda: rng.choice([0, 1, -1, 2**70, -(2**70), 10**30]),
            lambda: rng.choice([0.5, -1e308, 1e308, 1e-320, 11.0, -10.5]),
            lambda: rng.choice(["", "0", "nan", "Infinity", "\u0000", "é" * 50]),
            lambda: rng.choice([True, False, None]),
            lambda: [rng.uniform(-12, 12) for _ in range(rng.choice([0, 1, 2, 3, 4, 100]))],
            lambda: [rng.choice([0, "a", None, True, [1], {}]) for _ in range(3)],
            lambda: "x" * rng.randrange(0, 2000),
            lambda: rng.randrange(-5, 40),
            lambda: [junk_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))],
            lambda: {str(rng.random()): junk_value(rng, depth + 1) for _ in range(2)},
            lambda: {"z": junk_value(rng, depth + 1)},
            lambda: [[[0.0] * 3]]][kind]()


def junk_body(rng: random.Random) -> dict:
    body = {}
    for key in ("z", "a", "b", "steps", "mode", "run", "extra"):
        if rng.random() < 0.6:
            body[key] = junk_value(rng)
    if rng.random() < 0.3:  # otherwise valid, one field wrong
        body.update({"z": [0.0, 0.0, 0.0], "a": [0.0, 0.0, 0.0], "b": [1.0, 1.0, 1.0]})
        body[rng.choice(["steps", "mode", "run"])] = junk_value(rng)
    return body


def one_bad_request(server, rng: random.Random) -> int | None:
    """A random malformed request; its status (None: a raw exchange without one)."""
    choice = rng.randrange(7)
    if choice == 0:  # structured JSON with wrong types, sizes and values
        path = rng.choice(["/api/decode", "/api/interpolate"])
        return send(server, "POST", path, json.dumps(junk_body(rng)).encode())[0]
    if choice == 1:  # bytes that are not JSON, or not UTF-8, or cut short
        text = json.dumps(junk_body(rng)).encode()
        body = rng.choice([text[: rng.randrange(len(text) + 1)], rng.randbytes(64),
                           b"\xff\xfe" + text, b"[" * 50_000 + b"]" * 50_000,
                           b'{"z": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
                           b'{"z": [1e999, 0, 0]}', b'{"z": [NaN, 0, 0]}',
                           b'{"steps": ' + b"9" * 5000 + b"}"])
        return send(server, "POST", rng.choice(PATHS), body)[0]
    if choice == 2:  # wrong methods, with and without a body
        method = rng.choice(WRONG_METHODS)
        status, response = send(server, method, rng.choice(PATHS),
                                rng.choice([None, b"{}", rng.randbytes(20)]))
        assert status == 405 and response.getheader("Allow"), (method, status)
        return status
    if choice == 3:  # odd paths and query strings
        path = "/" + "".join(rng.choice("abc/._%?&=+~;:@!$'()*,-0123456789") for _ in
                             range(rng.randrange(0, 300)))
        return send(server, rng.choice(["GET", "HEAD"]), path)[0]
    if choice == 4:  # headers that lie
        headers = rng.choice([{"Content-Length": "-5"}, {"Content-Length": "abc"},
                              {"Content-Length": str(10**20)}, {"Host": "evil.example"},
                              {"Content-Length": "1000"}, {"Transfer-Encoding": "chunked"}])
        return send(server, "POST", "/api/decode", b"{}", headers)[0]
    if choice == 5:  # garbage request lines
        line = rng.choice([rng.randbytes(rng.randrange(1, 200)),
                           b"GET / HTTP/" + rng.choice([b"2.0", b"3.1", b"1.x", b"99.0"]),
                           b"POST /api/decode HTTP/1.1\r\nContent-Length: 5",
                           b"GET " + b"/a" * 40_000 + b" HTTP/1.1",
                           b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200])
        reply = send_raw(server, line + b"\r\n\r\n")
        if reply.startswith(b"HTTP/"):
            return int(reply.split(b" ", 2)[1])
        return None  # closed without a reply, or an HTTP/0.9 exchange (no status line)
    # a valid request line with a broken header block
    reply = send_raw(server, b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     + rng.randbytes(rng.randrange(1, 100)) + b"\r\n\r\n")
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else None


def test_wrong_methods_are_405_everywhere(server):
    for method in WRONG_METHODS:
        for path in PATHS:
            status, response = send(server, method, path)
            assert status == 405, (method, path, status)
            assert response.getheader("Allow") in ("GET, HEAD", "POST")
    good_decode(server)


def test_deeply_nested_json_is_400(server):
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"z": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                 b'{"a": ' * 30_000 + b"1" + b"}" * 30_000):
        assert send(server, "POST", "/api/decode", body)[0] == 400
    good_decode(server)


def test_fuzz_never_a_5xx_and_the_server_keeps_answering(server):
    rng = random.Random(0)
    start, seen = time.monotonic(), {}
    for _ in range(BURSTS):
        for _ in range(PER_BURST):
            status = one_bad_request(server, rng)
            seen[status] = seen.get(status, 0) + 1
            assert status is None or status < 500, status
        good_decode(server)  # still serving after each burst
        assert time.monotonic() - start < TIME_BOUND
    assert sum(seen.values()) == BURSTS * PER_BURST
    assert {400, 404, 405} <= set(seen)
