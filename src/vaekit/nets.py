"""Encoder and decoder networks: tensors in, tensors out, no probability here.

An encoder maps x (B, *in_shape) to (B, out_features); a decoder maps z (B, d) to
(B, *out_shape). The model turns those numbers into distributions. Any `nn.Module` with
the same input and output shapes can stand in for these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def activation(name: str) -> nn.Module:
    match name:
        case "relu":
            return nn.ReLU()
        case "tanh":
            return nn.Tanh()
        case "elu":
            return nn.ELU()
        case "silu":
            return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}")


class MLP(nn.Module):
    """Flatten (B, *in_shape), hidden layers with an activation, reshape to (B, *out_shape)."""

    def __init__(self, in_shape: tuple[int, ...], hidden: list[int], out_shape: tuple[int, ...],
                 act: str = "relu"):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        widths = [math.prod(in_shape), *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), activation(act)]
        layers.append(nn.Linear(widths[-1], math.prod(out_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)  # (B, prod(in_shape))
        return self.net(h).reshape(x.shape[0], *self.out_shape)


def conv_sizes(hw: tuple[int, int], stages: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stage: stride 2 while both sides are >= 4, then stride 1,
    so any H x W works (odd sizes included) and small images keep some resolution."""
    sizes = [tuple(hw)]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2) if min(h, w) >= 4 else (h, w))
    return sizes


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> stride-2 3x3 convs -> flatten -> (B, out_features)."""

    def __init__(self, in_shape: tuple[int, int, int], channels: list[int], out_features: int,
                 act: str = "relu"):
        super().__init__()
        c, h, w = in_shape
        sizes = conv_sizes((h, w), len(channels))
        layers: list[nn.Module] = []
        for i, ch in enumerate(channels):
            stride = 2 if sizes[i + 1] != sizes[i] else 1
            layers += [nn.Conv2d(c, ch, 3, stride=stride, padding=1), activation(act)]
            c = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * sizes[-1][0] * sizes[-1][1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))  # (B, out_features)


class ConvDecoder(nn.Module):
    """(B, d) -> linear to the smallest feature map -> [resize, 3x3 conv] per stage -> (B, *out_shape).

    `out_shape` is (P, C, H, W): P parameter maps (e.g. mean and scale) per image channel.
    Resizing to the encoder's recorded sizes (not transposed convs) gives any H x W exactly.
    """

    def __init__(self, latent_dim: int, channels: list[int], out_shape: tuple[int, int, int, int],
                 act: str = "relu"):
        super().__init__()
        p, c, h, w = out_shape
        self.out_shape = tuple(out_shape)
        self.sizes = conv_sizes((h, w), len(channels))[::-1]  # smallest first
        chans = list(channels)[::-1]
        self.start = chans[0]
        self.fc = nn.Linear(latent_dim, chans[0] * self.sizes[0][0] * self.sizes[0][1])
        self.act = activation(act)
        outs = chans[1:] + [chans[-1]]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans, outs))
        self.out = nn.Conv2d(outs[-1], p * c, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h0, w0 = self.sizes[0]
        h = self.act(self.fc(z)).reshape(z.shape[0], self.start, h0, w0)  # (B, C0, h0, w0)
        for conv, size in zip(self.convs, self.sizes[1:]):
            if h.shape[-2:] != size:
                h = F.interpolate(h, size=size, mode="nearest")
            h = self.act(conv(h))
        return self.out(h).reshape(z.shape[0], *self.out_shape)  # (B, P, C, H, W)
