"""The report's direct coordinate regressors on timm trunks (random init): ResNet34, Inception-v3.

- ``resnet34``: timm resnet34 without its average pooling; the 512x4x4 map at 128x128 input is
  flattened (8192 values) into one Linear layer to 42 outputs (the report's best ResNet variant:
  keeping the spatial layout beats global pooling for localisation).
- ``inception_v3``: timm's stock Inception-v3 with global average pooling (2048) and a 42-output
  Linear head. At 128x128 its valid-padded stem leaves a 2x2 map before the pooling (it needs at
  least 75x75 input). For speed, the 1x1 convolutions of a block that read the block's input run
  as one wider convolution, split after (`FusedHeads`, as irv2's `Mixed`): the same function and
  parameters, 75 convolutions instead of 94 per pass; `fused=False` keeps timm's layout.
"""
from __future__ import annotations

import copy

import timm
import torch
import torch.nn.functional as F
from timm.models.inception_v3 import InceptionA, InceptionC, InceptionD, InceptionE
from torch import Tensor, nn

from .base import RegressionModel, merge_heads_state


class ResNet34Regressor(RegressionModel):
    """ResNet34 trunk -> flatten (512 x img/32 x img/32) -> Linear(42)."""

    name = "resnet34"

    def __init__(self, img_size: int = 128, loss: str = "l2", dropout: float = 0.0,
                 occluded_weight: float = 1.0) -> None:
        side = -(-img_size // 32)
        super().__init__(512 * side * side, img_size=img_size, loss=loss, dropout=dropout,
                         occluded_weight=occluded_weight)
        self.trunk = timm.create_model("resnet34", pretrained=False, num_classes=0, global_pool="")

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)


class InceptionV3Regressor(RegressionModel):
    """Stock Inception-v3 trunk -> global average pooling (2048) -> Linear(42)."""

    name = "inception_v3"

    def __init__(self, img_size: int = 128, loss: str = "l2", dropout: float = 0.0,
                 occluded_weight: float = 1.0, fused: bool = True) -> None:
        if img_size < 75:
            raise ValueError(f"inception_v3 needs input of at least 75x75, got {img_size}")
        super().__init__(2048, img_size=img_size, loss=loss, dropout=dropout,
                         occluded_weight=occluded_weight)
        self.trunk = timm.create_model("inception_v3", pretrained=False, num_classes=0, global_pool="avg")
        if fused:  # after timm's initialisation: the same initial weights as the stock layout's
            for name, block in list(self.trunk.named_children()):
                if type(block) in FUSED:
                    setattr(self.trunk, name, FUSED[type(block)](block))

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)


# ----------------------------------------------------------------------------- fused 1x1 heads
def _side_by_side(layers: list[nn.Module]) -> nn.Module:
    """One timm ConvNormAct computing the 1x1 ConvNormAct `layers` side by side: their convolution
    weights and BatchNorm parameters and statistics concatenated on the output channels."""
    merged = copy.deepcopy(layers[0])
    conv, bn = merged.conv, merged.bn
    conv.weight = nn.Parameter(torch.cat([m.conv.weight.detach() for m in layers]))
    conv.out_channels = bn.num_features = conv.weight.shape[0]
    for name in ("weight", "bias"):
        setattr(bn, name, nn.Parameter(torch.cat([getattr(m.bn, name).detach() for m in layers])))
    for name in ("running_mean", "running_var"):
        setattr(bn, name, torch.cat([getattr(m.bn, name) for m in layers]))
    return merged


class FusedHeads(nn.Module):
    """A timm Inception block whose 1x1 Conv + BN + ReLU layers that read the block's input (`HEADS`)
    run as one wider layer, split after: the same function (BatchNorm and ReLU act per channel) and
    parameters, one read of the input, fewer and larger GPU kernels. The other layers keep timm's
    names; checkpoints of timm's layout (separate heads) load, their heads concatenated."""

    HEADS: tuple[str, ...] = ()

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        heads = [getattr(block, n) for n in self.HEADS]
        self.split = [m.conv.out_channels for m in heads]
        self.heads = _side_by_side(heads)
        for name, m in block.named_children():
            if name not in self.HEADS:
                self.add_module(name, m)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = [f"{prefix}{n}." for n in self.HEADS]
        if prefix + "heads.conv.weight" not in state_dict and old[0] + "conv.weight" in state_dict:
            merge_heads_state(state_dict, old, prefix + "heads.")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _avg_pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


class FusedA(FusedHeads):
    HEADS = ("branch1x1", "branch5x5_1", "branch3x3dbl_1")

    def forward(self, x: Tensor) -> Tensor:
        b1, b5, b3 = self.heads(x).split(self.split, dim=1)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(b3))
        return torch.cat([b1, self.branch5x5_2(b5), b3, self.branch_pool(_avg_pool(x))], 1)


class FusedC(FusedHeads):
    HEADS = ("branch1x1", "branch7x7_1", "branch7x7dbl_1")

    def forward(self, x: Tensor) -> Tensor:
        b1, b7, bd = self.heads(x).split(self.split, dim=1)
        b7 = self.branch7x7_3(self.branch7x7_2(b7))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        return torch.cat([b1, b7, bd, self.branch_pool(_avg_pool(x))], 1)


class FusedD(FusedHeads):
    HEADS = ("branch3x3_1", "branch7x7x3_1")

    def forward(self, x: Tensor) -> Tensor:
        b3, b7 = self.heads(x).split(self.split, dim=1)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        return torch.cat([self.branch3x3_2(b3), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FusedE(FusedHeads):
    HEADS = ("branch1x1", "branch3x3_1", "branch3x3dbl_1")

    def forward(self, x: Tensor) -> Tensor:
        b1, b3, bd = self.heads(x).split(self.split, dim=1)
        bd = self.branch3x3dbl_2(bd)
        return torch.cat([b1, self.branch3x3_2a(b3), self.branch3x3_2b(b3), self.branch3x3dbl_3a(bd),
                          self.branch3x3dbl_3b(bd), self.branch_pool(_avg_pool(x))], 1)


FUSED = {InceptionA: FusedA, InceptionC: FusedC, InceptionD: FusedD, InceptionE: FusedE}
