"""Inception-ResNet-v2, modified as in the 2018 report, as a direct coordinate regressor.

The report's modifications to Inception-ResNet-v2 (Szegedy et al. 2016; layer names and widths
follow timm's ``inception_resnet_v2``), for small 128x128 crops:

1. "the size-7 kernels are scaled to 5": the 1x7 / 7x1 pair of every Block17 (Inception-ResNet-B)
   becomes 1x5 / 5x1;
2. "the last max-pooling of the stem is replaced by two 3x1 convolution blocks that do not
   downscale" (stride 1, padding (1, 0)), so Block35 runs on 28x28 instead of 13x13 maps;
3. residual scaling 0.17 / 0.1 / 0.2 for Block35 / Block17 / Block8 (A / B / C);
4. "BatchNorm + LeakyReLU(0.01) after every non-linear convolution" (every conv except the
   linear 1x1 up-projections of the residual branches; the residual sums are activated with
   LeakyReLU too, where the original uses ReLU);
5. the head: an average pooling that keeps the spatial size (3x3, stride 1, padding 1), flatten,
   one Linear layer to the 42 coordinates (instead of global pooling + classifier).

Block counts are the original 10 / 20 / 10 (the last Block8 without activation). At 128x128 this
is about 13 GFLOPs per image (Block17 x 20 on 13x13x1088 maps is most of it), slow on a CPU:
``blocks=(a, b, c)`` and ``width`` (channel multiplier) make smaller variants for tests and
CPU experiments; the defaults are the faithful model.

For speed the leading 1x1 convolutions of a block's branches (which read the same input) run as
one wider convolution whose output is split (`Mixed`): the same function and parameter count, with
one read of the input and fewer, larger GPU kernels.

Shapes at 128x128: stem 28x28x192 -> Mixed_5b 28x28x320 -> Mixed_6a 13x13x1088 ->
Mixed_7a 6x6x2080 -> conv2d_7b 6x6x1536 -> flatten 55296 -> Linear 42.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from .base import RegressionModel, conv_bn_act, merge_heads_state

LEAK = 0.01

# a non-linear convolution: Conv (no bias) + BatchNorm (eps 1e-3) + LeakyReLU(0.01); 'valid'
# padding unless given, as in Inception-ResNet-v2
conv = partial(conv_bn_act, padding=0, act=nn.LeakyReLU, negative_slope=LEAK, inplace=True)


class Concat(nn.Module):
    """Run branches on the same input and concatenate their outputs on channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class Mixed(nn.Module):
    """Branches on the same input, concatenated on channels, whose leading 1x1 convolutions (each
    Conv + BN + LeakyReLU) run as one wider 1x1 convolution, split after: the same function as
    separate convolutions (BatchNorm and the activation act per channel), with one read of the
    input and fewer, larger kernels. Branch i is heads[i] channels, then the layers tails[i] (None:
    the 1x1 alone); `others` (pooling branches) follow, on the input. Checkpoints of the unfused layout
    (a Concat of the branches, before 2026-11-26) load into it."""

    def __init__(self, cin: int, heads: list[int], tails: list[list[nn.Module] | None],
                 others: tuple[nn.Module, ...] = ()) -> None:
        super().__init__()
        self.split, self.lone = list(heads), [t is None for t in tails]
        self.heads = conv(cin, sum(heads), 1)
        self.tails = nn.ModuleList(nn.Identity() if t is None else nn.Sequential(*t) for t in tails)
        self.others = nn.ModuleList(others)

    def forward(self, x: Tensor) -> Tensor:
        parts = self.heads(x).split(self.split, dim=1)
        return torch.cat([t(p) for t, p in zip(self.tails, parts)] + [o(x) for o in self.others], dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = prefix + "branches."
        if prefix + "heads.0.weight" not in state_dict and any(k.startswith(old) for k in state_dict):
            n = len(self.split)
            head = [f"{old}{i}." if self.lone[i] else f"{old}{i}.0." for i in range(n)]
            merge_heads_state(state_dict, head, prefix + "heads.", conv="0", bn="1")
            for k in [k for k in state_dict if k.startswith(old)]:
                i, rest = k[len(old):].split(".", 1)
                if int(i) >= n:
                    state_dict[f"{prefix}others.{int(i) - n}.{rest}"] = state_dict.pop(k)
                else:  # a tail layer: old branches.i.j -> tails.i.(j-1)
                    j, rest = rest.split(".", 1)
                    state_dict[f"{prefix}tails.{i}.{int(j) - 1}.{rest}"] = state_dict.pop(k)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Residual(nn.Module):
    """x + scale * Conv1x1(branches(x)), then LeakyReLU (none for the final Block8); `branches`
    concatenates its branches' outputs (a Mixed)."""

    def __init__(self, branches: nn.Module, cmid: int, channels: int, scale: float, act: bool = True) -> None:
        super().__init__()
        self.mixed = branches
        self.up = nn.Conv2d(cmid, channels, 1)  # linear projection back to the trunk width
        self.scale = scale
        self.act = nn.LeakyReLU(LEAK) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(torch.add(x, self.up(self.mixed(x)), alpha=self.scale))  # one kernel for the scaled sum


class IRV2(RegressionModel):
    """Modified Inception-ResNet-v2 regressor (see the module docstring)."""

    name = "irv2"
    compile_regions = (Residual,)  # 40 blocks of 3 kinds: compiled once per kind (~3x shorter compile)

    def __init__(self, img_size: int = 128, blocks: tuple[int, int, int] = (10, 20, 10),
                 width: float = 1.0, kernel: int = 5, loss: str = "l2", dropout: float = 0.0,
                 occluded_weight: float = 1.0) -> None:
        def c(n: int) -> int:
            return max(8, int(round(n * width)))

        stem = nn.Sequential(
            conv(3, c(32), 3, stride=2),                    # 63
            conv(c(32), c(32), 3),                          # 61
            conv(c(32), c(64), 3, padding=1),               # 61
            nn.MaxPool2d(3, stride=2),                      # 30
            conv(c(64), c(80), 1),                          # 30
            conv(c(80), c(192), 3),                         # 28
            conv(c(192), c(192), (3, 1), padding=(1, 0)),   # replaces maxpool_5a: 28
            conv(c(192), c(192), (3, 1), padding=(1, 0)),   # 28
        )
        mixed_5b = Mixed(c(192), [c(96), c(48), c(64)], [
            None,
            [conv(c(48), c(64), 5, padding=2)],
            [conv(c(64), c(96), 3, padding=1), conv(c(96), c(96), 3, padding=1)],
        ], (nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                          conv(c(192), c(64), 1)),))
        ca = c(96) + c(64) + c(96) + c(64)  # 320

        def block35() -> Residual:
            return Residual(Mixed(ca, [c(32), c(32), c(32)], [
                None,
                [conv(c(32), c(32), 3, padding=1)],
                [conv(c(32), c(48), 3, padding=1), conv(c(48), c(64), 3, padding=1)],
            ]), c(32) + c(32) + c(64), ca, scale=0.17)

        mixed_6a = Concat(
            conv(ca, c(384), 3, stride=2),
            nn.Sequential(conv(ca, c(256), 1), conv(c(256), c(256), 3, padding=1),
                          conv(c(256), c(384), 3, stride=2)),
            nn.MaxPool2d(3, stride=2),
        )
        cb = c(384) + c(384) + ca  # 1088
        p = kernel // 2

        def block17() -> Residual:
            return Residual(Mixed(cb, [c(192), c(128)], [
                None,
                [conv(c(128), c(160), (1, kernel), padding=(0, p)), conv(c(160), c(192), (kernel, 1), padding=(p, 0))],
            ]), c(192) + c(192), cb, scale=0.10)

        mixed_7a = Mixed(cb, [c(256), c(256), c(256)], [
            [conv(c(256), c(384), 3, stride=2)],
            [conv(c(256), c(288), 3, stride=2)],
            [conv(c(256), c(288), 3, padding=1), conv(c(288), c(320), 3, stride=2)],
        ], (nn.MaxPool2d(3, stride=2),))
        cc = c(384) + c(288) + c(320) + cb  # 2080

        def block8(scale: float = 0.20, act: bool = True) -> Residual:
            return Residual(Mixed(cc, [c(192), c(192)], [
                None,
                [conv(c(192), c(224), (1, 3), padding=(0, 1)), conv(c(224), c(256), (3, 1), padding=(1, 0))],
            ]), c(192) + c(256), cc, scale=scale, act=act)

        na, nb, nc = blocks
        trunk = nn.Sequential(
            stem, mixed_5b, *[block35() for _ in range(na)],
            mixed_6a, *[block17() for _ in range(nb)],
            mixed_7a, *[block8() for _ in range(max(0, nc - 1))], block8(scale=1.0, act=False),
            conv(cc, c(1536), 1),
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        )
        super().__init__(c(1536) * self.feature_side(img_size) ** 2, img_size=img_size, loss=loss,
                         dropout=dropout, occluded_weight=occluded_weight)
        self.trunk = trunk
        self.blocks = tuple(blocks)
        for m in self.trunk.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="leaky_relu", a=LEAK)

    @staticmethod
    def feature_side(img_size: int) -> int:
        """Side of the final feature map: the valid 3x3 convs and stride-2 reductions."""
        side = (img_size - 3) // 2 + 1 - 2      # conv2d_1a, conv2d_2a
        side = (side - 3) // 2 + 1 - 2          # maxpool_3a, conv2d_4a
        side = (side - 3) // 2 + 1              # mixed_6a
        side = (side - 3) // 2 + 1              # mixed_7a
        if side < 1:
            raise ValueError(f"irv2 needs input of at least 75x75, got {img_size}")
        return side

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)
