"""SimCC model (Li et al. 2022; the head of RTMPose): each joint's x and y as 1-D classification.

``simcc_resnet18`` = timm resnet18 (``features_only``, random init) -> the stride-`in_stride`
feature map -> a 3x3 conv to `token_channels` maps per joint -> each joint's maps flattened into a
token -> Linear to `hidden` -> (optional) one self-attention layer across the 21 joint tokens ->
Linear to the x logits (W x split_ratio bins) and to the y logits (H x split_ratio bins).
No upsampling: the head is a few small matrix products.

Targets (lib.codecs.simcc_targets): a Gaussian of `sigma` bins around the label, normalised to a
distribution; the loss is the KL divergence from it to softmax(logits) per axis and joint, averaged
with the joint weights ("kl"), optionally plus an L1 in crop pixels on the soft-argmax of the logits
("kl+l1", integral regression on the same logits, which moves coordinates from the first step).
Decoding: soft-argmax over the bins within `window` bins of the peak (lib.codecs.decode_simcc), in
crop pixels with the labels' convention. ``simcc_resnet18_64`` looks at the crop resized to 64x64
(``input_size``): 4x4 tokens from stride 16, and the unused stride-32 stage is not built.

Measured from scratch (2-core CPU, cpu profile's data, BENCHMARKS.md section 6, 2026-11-26): it
memorises fastest (512 hands to a train EPE below 3 px in 500 steps, where hm_resnet18_64 is at
4.4 px after 1,234) but generalises slower: at the cpu budget 530-544 val kaggle_mse against
hm_resnet18_64's 502 (its EPE, 26.0-26.1 px, is as good; its larger misses cost the MSE), and at
9,216 images 740 (stride 32, 128 px) against the integral heatmap's 564. The fully connected map
from tokens to bins has to learn where each bin is, which a convolutional heatmap knows from its
structure; RTMPose pays for that with pretrained backbones and hundreds of epochs.
The defaults (stride 16, sigma 8 bins, L1 weight 0.05) are the best of the variants tried there
(stride 32 / sigma 4 / L1 0.01 learned slowest).
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib import codecs
from lib.joints import NUM_JOINTS

from .base import KeypointModel, conv_bn_act

SIMCC_LOSSES = ("kl", "kl+l1")


class SimCCNet(KeypointModel):
    """timm features_only backbone -> per-joint tokens -> x and y logits over sub-pixel bins."""

    family = "simcc"

    def __init__(self, backbone: str = "resnet18", img_size: int = 128, in_stride: int = 16,
                 token_channels: int = 4, hidden: int = 256, mixer: str = "attn", split_ratio: float = 2.0,
                 sigma: float = 8.0, loss: str = "kl+l1", l1_weight: float = 0.05, window: int = 16,
                 occluded_weight: float = 1.0, input_size: int | None = None, **backbone_kw) -> None:
        super().__init__(img_size=img_size, occluded_weight=occluded_weight)
        if loss not in SIMCC_LOSSES:
            raise ValueError(f"unknown SimCC loss {loss!r}; expected one of {SIMCC_LOSSES}")
        if mixer not in ("attn", "none"):
            raise ValueError(f"unknown SimCC mixer {mixer!r}; expected attn or none")
        self.backbone_name = backbone
        probe = timm.create_model(backbone, pretrained=False, features_only=True, **backbone_kw)
        reds = probe.feature_info.reduction()
        if in_stride not in reds:
            raise ValueError(f"in_stride {in_stride}: {backbone} has feature strides {reds}")
        # only the layers up to that stride: the deeper ones would cost time and feed nothing
        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True,
                                          out_indices=(reds.index(in_stride),), **backbone_kw)
        self.level = 0
        cin = self.backbone.feature_info.channels()[0]
        self.input_size = input_size or img_size
        side = self.input_size // in_stride
        self.token_channels = token_channels
        self.to_tokens = conv_bn_act(cin, NUM_JOINTS * token_channels, 3)
        self.embed = nn.Sequential(nn.Linear(token_channels * side * side, hidden), nn.LayerNorm(hidden))
        self.mixer = (nn.TransformerEncoderLayer(hidden, nhead=4, dim_feedforward=2 * hidden, dropout=0.0,
                                                 activation="gelu", batch_first=True, norm_first=True)
                      if mixer == "attn" else nn.Identity())
        self.bins = int(round(img_size * split_ratio))
        self.head_x = nn.Linear(hidden, self.bins)
        self.head_y = nn.Linear(hidden, self.bins)
        for head in (self.head_x, self.head_y):
            nn.init.normal_(head.weight, std=1e-3)
            nn.init.zeros_(head.bias)
        self.split_ratio, self.sigma, self.loss_kind = split_ratio, sigma, loss
        self.l1_weight, self.window = l1_weight, window

    def forward(self, x: Tensor) -> dict:
        f = self.backbone(self.network_input(x, self.input_size))[self.level]
        t = self.to_tokens(f)                                   # (B, K*m, h, w)
        t = t.unflatten(1, (NUM_JOINTS, -1)).flatten(2)          # (B, K, m*h*w)
        t = self.mixer(self.embed(t))                           # (B, K, hidden)
        with torch.autocast(device_type=t.device.type, enabled=False):  # logits in float32
            t = t.float()
            lx, ly = self.head_x(t), self.head_y(t)
        return {"kp": self.decode(lx, ly), "simcc_x": lx, "simcc_y": ly}

    @torch.no_grad()
    def decode(self, lx: Tensor, ly: Tensor) -> Tensor:
        """Crop-pixel keypoints: soft-argmax within `window` bins of each axis' peak."""
        return codecs.decode_simcc(lx, ly, self.split_ratio, "soft_argmax", window=self.window)

    def loss(self, out: dict, kp: Tensor, vis: Tensor | None = None) -> Tensor:
        """KL(target || softmax(logits)) per axis and joint (+ L1 px of the soft-argmax for "kl+l1")."""
        with torch.autocast(device_type=kp.device.type, enabled=False):
            lx, ly = out["simcc_x"].float(), out["simcc_y"].float()
            tx, ty, _ = codecs.simcc_targets(kp.float(), (self.img_size, self.img_size), self.split_ratio, self.sigma)
            w = self.joint_weights(kp, vis)
            norm = w.sum().clamp_min(1.0)
            total = kp.new_zeros((), dtype=torch.float32)
            for logits, target in ((lx, tx), (ly, ty)):
                kl = F.kl_div(F.log_softmax(logits, -1), target, reduction="none").sum(-1)  # (B, K)
                total = total + (kl * w).sum() / norm
            if self.loss_kind == "kl+l1":
                coord = codecs.simcc_expectation(lx, ly, self.split_ratio)
                l1 = (coord - kp.float()).abs().sum(-1)
                total = total + self.l1_weight * (l1 * w).sum() / norm
            return total
