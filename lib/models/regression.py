"""The report's direct coordinate regressors on timm trunks (random init): ResNet34, Inception-v3.

- ``resnet34``: timm resnet34 without its average pooling; the 512x4x4 map at 128x128 input is
  flattened (8192 values) into one Linear layer to 42 outputs (the report's best ResNet variant:
  keeping the spatial layout beats global pooling for localisation).
- ``inception_v3``: timm's stock Inception-v3 with global average pooling (2048) and a 42-output
  Linear head. At 128x128 its valid-padded stem leaves a 2x2 map before the pooling (it needs at
  least 75x75 input).
"""
from __future__ import annotations

import timm
from torch import Tensor

from .base import RegressionModel


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
                 occluded_weight: float = 1.0) -> None:
        if img_size < 75:
            raise ValueError(f"inception_v3 needs input of at least 75x75, got {img_size}")
        super().__init__(2048, img_size=img_size, loss=loss, dropout=dropout,
                         occluded_weight=occluded_weight)
        self.trunk = timm.create_model("inception_v3", pretrained=False, num_classes=0, global_pool="avg")

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

