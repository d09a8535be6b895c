"""The explorer's HTTP API against a live server on 127.0.0.1: valid decodes are the model's
own output, bad requests get 400 with a message, only the package's web files are served,
and no request can crash or hang the server."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.cli import main
from vaelab.models.latent_space import decode_flat
from vaelab.viz.explorer.session import LIMIT, MAX_STEPS
from viz_runs import serving, tiny_run

TIMEOUT = 1.0  # the server's per-connection socket timeout in these tests


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = {"gauss": tiny_run(tmp_path_factory, "gaussian", "image"),
            "cat": tiny_run(tmp_path_factory, "categorical", "image"),
            "tab": tiny_run(tmp_path_factory, "gaussian", "tabular")}
    yield from serving(runs, TIMEOUT)


def request(server, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    """(status, headers, parsed JSON or raw bytes)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=headers or {})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    ctype = response.getheader("Content-Type", "")
    parsed = json.loads(payload) if ctype.startswith("application/json") else payload
    return response.status, response, parsed


def read_until_closed(sock: socket.socket, stop: bytes | None = None) -> bytes:
    """Everything the server sends until it closes the connection (or ``stop`` arrives)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
        if stop is not None and data.endswith(stop):
            break
    return data


def png(data_uri: str) -> np.ndarray:
    assert data_uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))) as img:
        return np.asarray(img)


# -- what works --------------------------------------------------------------------------------

def test_page_and_static_files(server):
    status, response, body = request(server, "GET", "/")
    assert status == 200 and b"<canvas id=\"latent\"" in body
    csp = response.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert request(server, "GET", "/static/app.js")[1].getheader("Content-Type").startswith(
        "text/javascript")
    assert request(server, "GET", "/static/style.css")[0] == 200
    status, response, body = request(server, "HEAD", "/")
    assert status == 200 and body == b"" and int(response.getheader("Content-Length")) > 100


def test_page_loads_nothing_from_outside(server):
    for name in ("/", "/static/app.js", "/static/style.css"):
        text = request(server, "GET", name)[2].decode()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_info_describes_the_run_and_its_projection(server):
    status, _, info = request(server, "GET", "/api/info?run=gauss")
    assert status == 200
    assert info["family"] == "gaussian" and info["flat_dim"] == 3 and info["runs"] == [
        "gauss", "cat", "tab"]
    assert len(info["points"]) == len(info["codes"]) == len(info["labels"]) == 20
    codes, center = torch.tensor(info["codes"]), torch.tensor(info["projection"]["center"])
    basis = torch.tensor(info["projection"]["basis"])
    torch.testing.assert_close((codes - center) @ basis.T, torch.tensor(info["points"]),
                               atol=1e-3, rtol=0)
    default = request(server, "GET", "/api/info")[2]
    assert default["run"] == "gauss"
    cat = request(server, "GET", "/api/info?run=cat")[2]
    assert cat["categorical"] and cat["latent_shape"] == [3, 3] and cat["flat_dim"] == 9


def test_decode_returns_the_models_mean_image(server):
    z = [0.5, -1.25, 2.0]
    status, _, out = request(server, "POST", "/api/decode", {"run": "gauss", "z": z})
    assert status == 200
    model = server.runs["gauss"].model
    expected = decode_flat(model, torch.tensor([z]))[0, 0]
    expected = (expected.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(png(out["image"]), expected)
    assert out["decode_ms"] >= 0


def test_decode_categorical_and_tabular(server):
    one_hot = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    status, _, out = request(server, "POST", "/api/decode", {"run": "cat", "z": one_hot})
    assert status == 200 and png(out["image"]).shape == (8, 8)
    status, _, out = request(server, "POST", "/api/decode", {"run": "tab", "z": [0, 0, 0]})
    assert status == 200 and len(out["values"]) == 12
    assert png(out["image"]).shape == (3, 4)  # 12 values in a near-square grid


@pytest.mark.parametrize("mode", ["linear", "slerp"])
def test_interpolation_strip(server, mode):
    body = {"a": [-2, 0, 1], "b": [2, 1, -1], "steps": 6, "mode": mode}
    status, _, out = request(server, "POST", "/api/interpolate", body)
    assert status == 200 and out["steps"] == 6
    strip = png(out["image"])
    assert strip.shape == (8, 6 * 8 + 5)  # six 8x8 frames, 1-pixel gaps
    model = server.runs["gauss"].model
    first = decode_flat(model, torch.tensor([[-2.0, 0.0, 1.0]]))[0, 0]
    np.testing.assert_array_equal(strip[:, :8],
                                  (first.clamp(0, 1) * 255).round().to(torch.uint8).numpy())


# -- what is refused ---------------------------------------------------------------------------

BAD_DECODES = [
    ({"z": [0.0, 1.0]}, "must have 3 numbers"),
    ({"z": [0, 1, 2, 3]}, "must have 3 numbers"),
    ({"z": []}, "must have 3 numbers"),
    ({"z": ["0", 1, 2]}, "must be a number"),
    ({"z": [True, 1, 2]}, "must be a number"),
    ({"z": [None, 1, 2]}, "must be a number"),
    ({"z": [[0], 1, 2]}, "must be a number"),
    ({"z": [0, float("inf"), 2]}, "not allowed"),  # json.dumps writes Infinity
    ({"z": [0, LIMIT + 0.5, 2]}, "outside"),
    ({"z": [0, -1e6, 2]}, "outside"),
    ({"z": "0,1,2"}, "must be a list"),
    ({"z": {"0": 1}}, "must be a list"),
    ({}, "must be a list"),
    ({"run": "nope", "z": [0, 0, 0]}, "unknown run"),
    ({"run": 3, "z": [0, 0, 0]}, "unknown run"),
    ({"run": "cat", "z": [0.5] * 9}, "sum to"),
    ({"run": "cat", "z": [-1, 2, 0] * 3}, "not a probability"),
]


@pytest.mark.parametrize(("body", "message"), BAD_DECODES)
def test_bad_decode_requests_get_400_and_a_message(server, body, message):
    status, _, out = request(server, "POST", "/api/decode", body)
    assert status == 400 and message in out["error"], out


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"z": [0, NaN, 1]}', "NaN is not allowed"),
    (b'{"z": [0, Infinity, 1]}', "Infinity is not allowed"),
    (b'{"z": [0, -Infinity, 1]}', "-Infinity is not allowed"),
    (b'{"z": [0, 1e999, 1]}', "must be finite"),
    (b'{"z": [0, ' + b"9" * 5000 + b", 1]}", "not valid JSON"),  # over Python's int limit
    (b"{\"z\": [0, " + b"9" * 400 + b", 1]}", "too large"),  # a huge but parseable int
    (b"z=0,1,2", "not valid JSON"),
    (b"[0, 1, 2]", "must be a JSON object"),
    (b"\xff\xfe", "not valid JSON"),
    (b"", "not valid JSON"),
])
def test_malformed_json_gets_400(server, raw, message):
    status, _, out = request(server, "POST", "/api/decode", raw=raw,
                             headers={"Content-Type": "application/json"})
    assert status == 400 and message in out["error"], out


@pytest.mark.parametrize(("body", "message"), [
    ({"a": [0, 0, 0], "b": [1, 1], "steps": 4}, "b must have 3 numbers"),
    ({"a": [0, 0, 0], "b": [1, 1, 1], "steps": 1}, "steps must be in 2.."),
    ({"a": [0, 0, 0], "b": [1, 1, 1], "steps": MAX_STEPS + 1}, "steps must be in"),
    ({"a": [0, 0, 0], "b": [1, 1, 1], "steps": "5"}, "must be an integer"),
    ({"a": [0, 0, 0], "b": [1, 1, 1], "steps": 4.5}, "must be an integer"),
    ({"a": [0, 0, 0], "b": [1, 1, 1], "mode": "cubic"}, "mode must be"),
    ({"run": "cat", "a": [1, 0, 0] * 3, "b": [0, 1, 0] * 3, "mode": "slerp"}, "continuous"),
    ({"b": [1, 1, 1]}, "a must be a list"),
])
def test_bad_interpolation_requests_get_400(server, body, message):
    status, _, out = request(server, "POST", "/api/interpolate", body)
    assert status == 400 and message in out["error"], out


def test_missing_run_in_info_gets_400(server):
    status, _, out = request(server, "GET", "/api/info?run=../../etc")
    assert status == 400 and "unknown run" in out["error"]


def test_body_limits(server):
    status, _, out = request(server, "POST", "/api/decode", raw=b" " * (300 * 1024))
    assert status == 413 and "larger than" in out["error"]
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:  # no Content-Length
        sock.sendall(b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = read_until_closed(sock, stop=b"}")
    assert reply.startswith(b"HTTP/1.1 400") and b"needs a Content-Length" in reply


def test_wrong_host_header_is_refused(server):
    status, _, out = request(server, "GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 400 and "Host" in out["error"]


TRAVERSALS = ["/static/../config.toml", "/static/../../../../etc/passwd",
              "/static/..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
              "/static//etc/passwd", "/static/", "/static/./app.js", "/static/app.js/",
              "/../../etc/passwd", "//etc/passwd", "/static/__init__.py", "/static/web",
              "/static/%00app.js", "/static/app.js%00.png", "/index.html/../config.toml",
              "/static/\\..\\..\\etc\\passwd", "/api/../static/app.js", "/nope", "/api/nope"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_only_its_own_files_are_served(server, path):
    status, _, out = request(server, "GET", path)
    assert status == 404, path
    assert "error" in out and "root:" not in json.dumps(out)


def test_wrong_methods(server):
    status, response, _ = request(server, "GET", "/api/decode")
    assert status == 405 and response.getheader("Allow") == "POST"
    assert request(server, "POST", "/", {"z": [0, 0, 0]})[0] == 405
    assert request(server, "POST", "/static/app.js", {})[0] == 405
    assert request(server, "POST", "/api/elsewhere", {})[0] == 404
    assert request(server, "PUT", "/api/decode", {})[0] == 405
    assert request(server, "DELETE", "/")[0] == 405


def test_stalled_clients_neither_hang_nor_block_the_server(server):
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as stalled, \
            socket.create_connection((host, port), timeout=10) as half:
        stalled.sendall(b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Length: 100\r\n\r\n{\"z\": [0,")  # 9 of 100 bytes, stalls
        half.sendall(b"GET /api/in")  # half a request line, then nothing
        start = time.monotonic()
        assert request(server, "POST", "/api/decode", {"z": [0, 0, 0]})[0] == 200  # not blocked
        reply = read_until_closed(stalled)  # the server gives up on the body after its timeout
        assert reply.startswith(b"HTTP/1.1 400") and b"not received within" in reply
        assert read_until_closed(half) == b""  # dropped without a response
        assert time.monotonic() - start < TIMEOUT + 5


def test_concurrent_decodes_and_the_server_survives_everything(server):
    results: list[int] = []

    def worker(k: int) -> None:
        for i in range(10):
            z = [(k - 3) * 0.5, i * 0.2, -1.0]
            results.append(request(server, "POST", "/api/decode", {"z": z})[0])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 60
    assert request(server, "GET", "/api/info")[0] == 200


# -- the command -------------------------------------------------------------------------------

def test_explore_command_serves_and_refuses_missing_runs(tmp_path_factory, tmp_path, capsys):
    assert main(["explore", str(tmp_path / "missing"), "--no-browser", "--port", "0"]) == 2
    assert "not a vaelab run folder" in capsys.readouterr().err
    assert main(["explore", str(tmp_path), "--port", "70000"]) == 2
    run = tiny_run(tmp_path_factory, "gaussian", "image")
    src = str(Path(__file__).resolve().parents[2] / "src")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "explore", str(run.path), "--port", "0",
         "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": src})
    try:
        line = proc.stdout.readline()  # "vaelab explorer: http://127.0.0.1:PORT/ ..."
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split()[2]
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/api/info")
        info = json.loads(conn.getresponse().read())
        conn.close()
        assert info["run"] == run.path.name and info["flat_dim"] == 3
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
