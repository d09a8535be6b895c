"""The explorer on hierarchical and conditional runs: its latent is the top layer z_L, a
decode is the model's picture of z_L (the conditional-mean path down to x), over the same
HTTP API as one-layer runs."""

from __future__ import annotations

import base64
import http.client
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.data.prepare import eval_split, load_split, prepare_eval_x
from vaelab.models.hierarchical import HierarchicalVAE
from viz_runs import serving, tiny_run

RUNS = {"top-down": ("model.latent_layers=[4,2]", "model.inference=top-down"),
        "bottom-up": ("model.latent_layers=[4,2]", "model.inference=bottom-up"),
        "conditional": ("model.latent_layers=[4,2]", "model.conditional=true")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = {name: tiny_run(tmp_path_factory, "gaussian", "image", *extra)
            for name, extra in RUNS.items()}
    yield from serving(runs, 1.0)


def post(server, path: str, body) -> tuple[int, dict]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("POST" if body is not None else "GET", path,
                 body=None if body is None else json.dumps(body).encode())
    response = conn.getresponse()
    out = json.loads(response.read())
    conn.close()
    return response.status, out


def png(data_uri: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))) as img:
        return np.asarray(img)


def as_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("name", list(RUNS))
def test_info_codes_are_the_top_layers_q_means(server, name):
    run = server.runs[name]
    model = run.model
    assert isinstance(model, HierarchicalVAE) and model.sizes == [4, 2]
    status, info = post(server, f"/api/info?run={name}", None)
    assert status == 200
    assert info["latent_shape"] == [2] and info["flat_dim"] == 2
    data = load_split(run.config, eval_split(run.config))
    x = prepare_eval_x(run.config, data)[:20]
    with torch.no_grad():
        expected = model.encode(x).mean  # q(z_L|x) (bottom-up: along the lower means)
    torch.testing.assert_close(torch.tensor(info["codes"]), expected, atol=1e-4, rtol=0)
    assert len(info["labels"]) == 20


@pytest.mark.parametrize("name", list(RUNS))
def test_decode_and_interpolate_follow_the_conditional_means_down(server, name):
    model = server.runs[name].model
    z = [0.75, -1.5]
    status, out = post(server, "/api/decode", {"run": name, "z": z})
    assert status == 200
    with torch.no_grad():
        z1 = model.down[0](torch.tensor([z])).mean  # E[z_1 | z_2]
        expected = model.likelihood(model.decoder(
            torch.cat([z1, torch.full((1, model.classes), 1 / model.classes)], 1)
            if model.classes else z1)).mean[0, 0]
    np.testing.assert_array_equal(png(out["image"]), as_uint8(expected))
    status, out = post(server, "/api/interpolate",
                       {"run": name, "a": [-2, 0], "b": z, "steps": 4})
    assert status == 200 and png(out["image"]).shape == (8, 4 * 8 + 3)
    np.testing.assert_array_equal(png(out["image"])[:, -8:], as_uint8(expected))


def test_a_bottom_layer_sized_code_is_refused(server):
    status, out = post(server, "/api/decode", {"run": "top-down", "z": [0, 0, 0, 0]})
    assert status == 400 and "must have 2 numbers" in out["error"]
