"""Convolutional Pose Machine (Wei et al. 2016) as configured in the 2018 report.

- 3 stages, 128 feature maps, 5x5 kernels, 22 belief maps (21 joints + background) at 16x16
  (stride 8) for a 128x128 crop;
- a shared image-feature trunk (x' in the paper: four 5x5 conv layers with three 2x2 max-pools);
  stage 1 maps the trunk features to beliefs, every later stage sees the trunk features
  concatenated with the previous stage's beliefs (the paper's context input), so its receptive
  field grows stage after stage;
- targets: a 2-D Gaussian (sigma 1 map pixel) per joint, background = 1 - max over joints;
  loss: L2 between predicted and target maps summed over all stages (intermediate supervision);
- prediction: the last stage's joint maps bicubically upscaled to the input size, argmax per
  map, then (``refine=True``) a quadratic sub-pixel step on the log of the upscaled map.

``norm=True`` (default) puts BatchNorm after each conv: a from-scratch CPM without it learns
several times slower on a CPU budget (see lib/models/heatmap.py's notes); ``norm=False`` is the
paper's plain ReLU network.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib import codecs
from lib.joints import NUM_JOINTS

from .base import KeypointModel, conv_bn_act


class CPM(KeypointModel):
    """Convolutional Pose Machine: T stages of belief maps with intermediate supervision."""

    name = "cpm"
    family = "heatmap"

    def __init__(self, img_size: int = 128, stages: int = 3, channels: int = 128, kernel: int = 5,
                 sigma: float = 1.0, norm: bool = True, refine: bool = True,
                 occluded_weight: float = 1.0) -> None:
        super().__init__(img_size=img_size, occluded_weight=occluded_weight)
        if img_size % 8:
            raise ValueError(f"cpm needs an input size divisible by 8, got {img_size}")
        self.stride, self.sigma, self.refine = 8, sigma, refine
        self.map_size = img_size // 8
        k, c, n_maps = kernel, channels, NUM_JOINTS + 1
        # 'same' conv + BatchNorm (torch's default eps) + ReLU; conv with a bias and no BN if not norm
        conv = partial(conv_bn_act, norm=norm, eps=1e-5, inplace=True)
        self.trunk = nn.Sequential(  # the layers are spliced in flat (state-dict keys trunk.0, ...)
            *conv(3, c // 2, k), nn.MaxPool2d(2),        # 64x64
            *conv(c // 2, c // 2, k), nn.MaxPool2d(2),   # 32x32
            *conv(c // 2, c, k), nn.MaxPool2d(2),        # 16x16
            *conv(c, c, k),
        )
        self.stages = nn.ModuleList()
        for t in range(stages):
            cin = c if t == 0 else c + n_maps
            n_conv = 1 if t == 0 else 3
            body: list[nn.Module] = []
            for i in range(n_conv):
                body += conv(cin if i == 0 else c, c, k)
            body += [*conv(c, c, 1), nn.Conv2d(c, n_maps, 1)]
            self.stages.append(nn.Sequential(*body))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for stage in self.stages:  # start from "all background": the easy part of the target
            last = stage[-1]
            nn.init.normal_(last.weight, std=1e-3)
            with torch.no_grad():
                last.bias.zero_()
                last.bias[-1] = 1.0

    def forward(self, x: Tensor) -> dict:
        f = self.trunk(self.normalize(x))
        maps: list[Tensor] = []
        b = self.stages[0](f)
        maps.append(b)
        for stage in self.stages[1:]:
            b = stage(torch.cat([f, b], dim=1))
            maps.append(b)
        return {"kp": self.decode(maps[-1]), "heatmaps": maps}

    @torch.no_grad()
    def decode(self, maps: Tensor) -> Tensor:
        """Crop-pixel keypoints from the joint maps: bicubic upscale x8, argmax, optional refine."""
        up = F.interpolate(maps[:, :NUM_JOINTS].float(), scale_factor=self.stride, mode="bicubic",
                           align_corners=False)
        return codecs.decode_heatmaps(up, stride=1, method="quadratic" if self.refine else "argmax")

    def targets(self, kp: Tensor) -> Tensor:
        """Target maps (B, 22, h, w): joint Gaussians and the background channel."""
        g, _ = codecs.gaussian_heatmaps(kp, (self.map_size, self.map_size), self.stride, self.sigma)
        return torch.cat([g, codecs.background_map(g)], dim=1)

    def loss(self, out: dict, kp: Tensor, vis: Tensor | None = None) -> Tensor:
        """Sum over stages of the mean squared error between predicted and target maps."""
        with torch.autocast(device_type=kp.device.type, enabled=False):
            target = self.targets(kp.float())
            w = self.joint_weights(kp, vis)
            w = torch.cat([w, torch.ones_like(w[:, :1])], dim=1)[..., None, None]  # background: 1
            total = kp.new_zeros((), dtype=torch.float32)
            for maps in out["heatmaps"]:
                total = total + (w * (maps.float() - target) ** 2).mean()
            return total
