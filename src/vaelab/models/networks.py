"""Encoder and decoder networks: tensors in, tensors out. No probability here.

An encoder maps x of shape ``(*batch, *event_shape)`` to features ``(*batch, out_features)``.
A decoder maps z of shape ``(*batch, in_features)`` to ``(*batch, k, *event_shape)``: k
parameter maps per data element (k=1 logits for Bernoulli, k=2 for a Gaussian with a
per-pixel learned variance, ...). Leading batch dimensions (e.g. K importance samples) pass
through unchanged.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import cast

import torch
from torch import nn

from vaelab.models.fastlinear import Linear

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(in_features: int, hidden: list[int], out_features: int, act: str) -> nn.Sequential:
    """Linear layers with ``act`` between them; ``hidden=[]`` gives a single linear map."""
    sizes = [in_features, *hidden, out_features]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flattens the event and applies an MLP."""

    def __init__(self, event_shape: tuple[int, ...], hidden: list[int], out_features: int,
                 act: str = "relu"):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.net = mlp(math.prod(event_shape), hidden, out_features, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(self.event_shape)]
        return self.net(x.reshape(*batch, -1))


class MLPDecoder(nn.Module):
    """An MLP from z to ``k`` parameter maps of the data's event shape."""

    def __init__(self, in_features: int, hidden: list[int], event_shape: tuple[int, ...],
                 params_per_element: int = 1, act: str = "relu"):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.k = params_per_element
        self.net = mlp(in_features, hidden, self.k * math.prod(event_shape), act)

    @property
    def output_layer(self) -> Linear:
        return cast(Linear, self.net[-1])  # mlp() ends in a Linear

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        return out.view(*z.shape[:-1], self.k, *self.event_shape)


CHANNELS_LAST = os.environ.get("VAELAB_CHANNELS_LAST", "1") != "0"


def _conv_layout(x: torch.Tensor) -> torch.Tensor:
    """Feature maps in channels-last order (N, H, W, C in memory) for oneDNN's convolutions:
    the NCHW layout makes them reorder every input and gradient. Same values (a view of the
    same numbers in another memory order); only the kernels' summation order changes."""
    if CHANNELS_LAST and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _require_image(event_shape: tuple[int, ...], who: str) -> tuple[int, int, int]:
    if len(event_shape) != 3:
        raise ValueError(f"a conv {who} needs image data of shape (C, H, W), got event shape "
                         f"{event_shape}; use model.{who}=mlp for flat data")
    c, h, w = event_shape
    return c, h, w


class ResidualBlock(nn.Module):
    """x + conv(act(conv(act(x)))): two 3x3 convolutions at the same size and channels, the
    pre-activation residual unit of He et al. 2016 ("Identity mappings in deep residual
    networks") without batch norm, so a datapoint's output never depends on its batch (the
    IS evaluator scores K copies of one image at a time). The second convolution starts at
    zero, so every block starts as the identity (Goyal et al. 2017; Zhang et al. 2019,
    "Fixup"): a network with blocks starts where the plain one does, and deep stacks train.
    Shapes (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int, act: str = "relu"):
        super().__init__()
        first = nn.Conv2d(channels, channels, 3, padding=1)
        last = nn.Conv2d(channels, channels, 3, padding=1)
        for t in last.parameters():  # weight and bias
            nn.init.zeros_(t)
        self.branch = nn.Sequential(activation(act), first, activation(act), last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def residual_blocks(channels: int, blocks: int, act: str) -> list[nn.Module]:
    return [ResidualBlock(channels, act) for _ in range(blocks)]


class ConvEncoder(nn.Module):
    """Stride-2 3x3 convolutions, each followed by ``blocks`` residual blocks
    (:class:`ResidualBlock`; 0 = a plain conv net), then a linear map to ``out_features``."""

    def __init__(self, event_shape: tuple[int, ...], channels: list[int], out_features: int,
                 act: str = "relu", hidden: list[int] | None = None, blocks: int = 0):
        super().__init__()
        c, h, w = _require_image(tuple(event_shape), "encoder")
        self.event_shape = (c, h, w)
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), activation(act),
                       *residual_blocks(ch, blocks, act)]
            c, h, w = ch, (h + 1) // 2, (w + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.head = mlp(c * h * w, list(hidden or []), out_features, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        feats = self.conv(_conv_layout(x.reshape(-1, *self.event_shape)))  # (B', C', H', W')
        return self.head(feats.flatten(1)).view(*batch, -1)


class ConvDecoder(nn.Module):
    """A linear map to a small feature map, then stride-2 transposed convolutions, each
    feature map before them passing ``blocks`` residual blocks (:class:`ResidualBlock`).

    The last layer outputs ``k * C`` channels and is cropped to the data's H x W, so any
    image size works.
    """

    def __init__(self, in_features: int, channels: list[int], event_shape: tuple[int, ...],
                 params_per_element: int = 1, act: str = "relu",
                 hidden: list[int] | None = None, blocks: int = 0):
        super().__init__()
        c, h, w = _require_image(tuple(event_shape), "decoder")
        self.event_shape = (c, h, w)
        self.k = params_per_element
        sizes = [(h, w)]
        for _ in channels:
            sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
        rev = list(reversed(channels))
        self.start_shape = (rev[0], *sizes[-1]) if channels else (self.k * c, h, w)
        self.head = mlp(in_features, list(hidden or []), math.prod(self.start_shape), act)
        self.head_act = activation(act) if channels else nn.Identity()
        layers: list[nn.Module] = []
        outs = [*rev[1:], self.k * c]
        for i, (cin, cout) in enumerate(zip(rev, outs, strict=True)):
            layers += residual_blocks(cin, blocks, act)
            layers.append(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1))
            if i < len(rev) - 1:
                layers.append(activation(act))
        self.deconv = nn.Sequential(*layers)

    @property
    def output_layer(self) -> nn.Module:
        return self.deconv[-1] if len(self.deconv) else self.head[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        feats = self.head_act(self.head(z.reshape(-1, z.shape[-1]))).view(-1, *self.start_shape)
        out = self.deconv(_conv_layout(feats))[..., : self.event_shape[1], : self.event_shape[2]]
        return out.reshape(*batch, self.k, *self.event_shape)
