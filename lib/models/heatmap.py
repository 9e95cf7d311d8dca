"""Modern heatmap model: a timm backbone + a light FPN-style head, 21 maps at stride 4.

``hm_resnet18`` = timm resnet18 (``features_only``, random init) -> 1x1 laterals from strides
4/8/16/32 summed top-down -> two 3x3 conv-BN-ReLU at 32x32 -> 21 maps. ``hm_resnet18_64`` (the
modern default) is the same network looking at the crop resized to 64x64 (``input_size=64``,
antialiased): 16x16 maps of 8 crop pixels each, a quarter of the FLOPs. Coordinates stay in crop
pixels either way (the map stride is counted in crop pixels). Two ways to train it:

- ``loss="integral"`` with ``decode="soft_argmax"`` (the defaults): the maps are logits,
  the keypoint is the expectation of their softmax (integral regression, Sun et al. 2018), and
  the loss is L1 in crop pixels. A fresh model predicts the crop centre and every step moves
  the coordinates, so it learns from the first batch.
- ``loss="mse"`` with ``decode="dark"``: Gaussian targets (sigma 2 map px), MSE, DARK sub-pixel
  decoding. The classic recipe, best after long training, but it starts slowly: for the first
  few hundred steps the maps stay near zero and argmax decoding jumps anywhere.

Measured (2-core CPU, the cpu profile's data, 256 validation hands, no TTA; BENCHMARKS.md
"Learning curves", 2026-11-26): at 9,216 training images (288 steps of 32) ``integral`` reaches
val kaggle_mse 564 and ``mse`` + DARK 709 (SimCC 740); in the cpu profile's 2.5 minutes the
128-px model gets 175-350 steps (as busy as the machine is) and 558-581, the 64-px one ~1,000
steps and 502 (mean pose ~860).
On a GPU with long schedules the 128-px input and the ``mse`` variant should be re-measured
against it (``create_model("hm_resnet18", loss="mse", decode="dark")``).
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib import codecs
from lib.joints import NUM_JOINTS

from .base import KeypointModel, conv_bn_act

HEATMAP_LOSSES = ("mse", "mse+integral", "integral")


class HeatmapNet(KeypointModel):
    """timm features_only backbone -> top-down fusion to stride 4 -> 21 heatmaps -> sub-pixel decode."""

    family = "heatmap"

    def __init__(self, backbone: str = "resnet18", img_size: int = 128, head_channels: int = 64,
                 out_stride: int = 4, sigma: float = 2.0, loss: str = "integral",
                 decode: str = "soft_argmax", integral_weight: float = 0.01, beta: float = 8.0,
                 occluded_weight: float = 1.0, input_size: int | None = None, **backbone_kw) -> None:
        super().__init__(img_size=img_size, occluded_weight=occluded_weight)
        if loss not in HEATMAP_LOSSES:
            raise ValueError(f"unknown heatmap loss {loss!r}; expected one of {HEATMAP_LOSSES}")
        self.backbone_name = backbone
        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True, **backbone_kw)
        info = self.backbone.feature_info
        chans, reds = info.channels(), info.reduction()
        keep = [i for i, r in enumerate(reds) if r >= out_stride]
        self.take = keep
        self.lateral = nn.ModuleList([nn.Conv2d(chans[i], head_channels, 1) for i in keep])
        self.fuse = nn.Sequential(conv_bn_act(head_channels, head_channels, 3),
                                  conv_bn_act(head_channels, head_channels, 3))
        self.final = nn.Conv2d(head_channels, NUM_JOINTS, 1)
        nn.init.normal_(self.final.weight, std=1e-3)
        nn.init.zeros_(self.final.bias)
        self.first_stride = reds[keep[0]]
        self.input_size = input_size or img_size
        self.map_size = self.input_size // out_stride
        self.stride = img_size / self.map_size  # crop pixels per map pixel
        self.sigma, self.loss_kind, self.decode_method = sigma, loss, decode
        self.integral_weight, self.beta = integral_weight, beta

    def forward(self, x: Tensor) -> dict:
        feats = self.backbone(self.network_input(x, self.input_size))
        feats = [feats[i] for i in self.take]
        y = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            y = F.interpolate(y, size=f.shape[-2:], mode="nearest") + lat(f)
        if y.shape[-1] != self.map_size:
            y = F.interpolate(y, size=(self.map_size, self.map_size), mode="bilinear", align_corners=False)
        y = self.fuse(y)
        with torch.autocast(device_type=y.device.type, enabled=False):
            maps = self.final(y.float())
        return {"kp": self.decode(maps), "heatmaps": [maps]}

    @torch.no_grad()
    def decode(self, maps: Tensor) -> Tensor:
        """Crop-pixel keypoints from the maps with the configured decoder."""
        if self.decode_method == "soft_argmax":
            return codecs.from_map(codecs.soft_argmax(maps.float(), self.beta), self.stride)
        return codecs.decode_heatmaps(maps, self.stride, self.decode_method)

    def loss(self, out: dict, kp: Tensor, vis: Tensor | None = None) -> Tensor:
        """The configured loss: "integral" (default) the soft-argmax L1 in px (x integral_weight);
        "mse" the MSE to Gaussian targets (x1000 so values are O(1)); "mse+integral" both."""
        with torch.autocast(device_type=kp.device.type, enabled=False):
            maps = out["heatmaps"][-1].float()
            w = self.joint_weights(kp, vis)
            total = kp.new_zeros((), dtype=torch.float32)
            if self.loss_kind in ("mse", "mse+integral"):
                target, _ = codecs.gaussian_heatmaps(kp.float(), maps.shape[-2:], self.stride, self.sigma)
                per = ((maps - target) ** 2).mean(dim=(2, 3))
                total = total + 1000.0 * (per * w).sum() / w.sum().clamp_min(1.0)
            if self.loss_kind in ("integral", "mse+integral"):
                uv = codecs.from_map(codecs.soft_argmax(maps, self.beta), self.stride)
                l1 = (uv - kp.float()).abs().sum(-1)
                total = total + self.integral_weight * (l1 * w).sum() / w.sum().clamp_min(1.0)
            return total
