"""What every keypoint model shares: input normalisation, the output/loss contract, losses.

Contract (lib.train, lib.predict and the notebooks rely on it):
- input: float (B, 3, H, W) RGB in 0..255, any memory format, optionally under autocast;
- ``model(x)`` returns a dict with ``"kp"``: (B, 21, 2) float32 (x, y) in crop pixels, plus the
  family's raw outputs (``"heatmaps"``: list of (B, K, h, w) maps, or ``"simcc_x"/"simcc_y"``);
- ``model.loss(out, kp, vis)``: a float32 scalar training loss for targets in crop pixels;
- attributes ``name`` (the registry name) and ``family`` ("regression" | "heatmap" | "simcc").

Visibility: the Kaggle score counts every joint, occluded ones included (RHD labels them all), so
by default a joint's loss weight is 1 whatever `vis` says; ``occluded_weight`` < 1 down-weights
joints with vis == 0 (0 ignores them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.joints import NUM_JOINTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FAMILIES = ("regression", "heatmap", "simcc")
REGRESSION_LOSSES = ("l2", "l1", "smooth_l1")


class KeypointModel(nn.Module):
    """Base class: ImageNet normalisation of 0..255 input and per-joint loss weights."""

    name: str = "?"
    family: str = "?"
    # module types repeated many times in the model; lib.models.compile_model compiles each of their
    # instances (one compiled graph shared by identical blocks) instead of the whole model
    compile_regions: tuple[type[nn.Module], ...] = ()

    def __init__(self, img_size: int = 128, occluded_weight: float = 1.0) -> None:
        super().__init__()
        self.img_size = img_size
        self.num_joints = NUM_JOINTS
        self.occluded_weight = occluded_weight
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def normalize(self, x: Tensor) -> Tensor:
        """0..255 RGB -> ImageNet-normalised input (keeps x's memory format)."""
        return (x - self.mean) / self.std

    def network_input(self, x: Tensor, size: int) -> Tensor:
        """Normalised input at size x size pixels (antialiased bilinear when it differs from x's):
        a model that looks at a smaller picture than the crop trains faster per image; its outputs
        stay in crop pixels (each model maps them back)."""
        x = self.normalize(x)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def joint_weights(self, kp: Tensor, vis: Tensor | None) -> Tensor:
        """Per-joint loss weights (B, K), float32: 1 for visible, `occluded_weight` for vis == 0."""
        if vis is None:
            return torch.ones(kp.shape[:-1], device=kp.device, dtype=torch.float32)
        v = vis.to(device=kp.device, dtype=torch.float32).reshape(kp.shape[:-1])
        return v + (1.0 - v) * self.occluded_weight

    def loss(self, out: dict, kp: Tensor, vis: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, family={self.family!r}"


def coordinate_loss(pred: Tensor, kp: Tensor, weights: Tensor, kind: str = "l2") -> Tensor:
    """Weighted mean over coordinates of l2 (squared error, px^2), l1 or smooth_l1 (beta 1 px)."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, kp = pred.float(), kp.float().to(pred.device)
        if kind == "l2":
            err = (pred - kp) ** 2
        elif kind == "l1":
            err = (pred - kp).abs()
        elif kind == "smooth_l1":
            err = F.smooth_l1_loss(pred, kp, reduction="none", beta=1.0)
        else:
            raise ValueError(f"unknown regression loss {kind!r}; expected one of {REGRESSION_LOSSES}")
        w = weights.unsqueeze(-1).expand_as(err)
        return (err * w).sum() / w.sum().clamp_min(1.0)


class RegressionModel(KeypointModel):
    """A trunk giving a feature tensor, flattened into one Linear layer to 2*21 coordinates.

    The Linear layer predicts offsets from the crop centre in half-crop units (so a fresh model
    starts at the centre, not at 0); ``kp`` is in crop pixels and the loss is computed there, so
    the default l2 loss is exactly the competition's MSE.
    """

    family = "regression"

    def __init__(self, feat_dim: int, img_size: int = 128, loss: str = "l2", dropout: float = 0.0,
                 occluded_weight: float = 1.0) -> None:
        super().__init__(img_size=img_size, occluded_weight=occluded_weight)
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"unknown regression loss {loss!r}; expected one of {REGRESSION_LOSSES}")
        self.loss_kind = loss
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(feat_dim, 2 * NUM_JOINTS)
        nn.init.normal_(self.head.weight, std=0.01 / max(1.0, feat_dim / 512) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover
        """The trunk's output for normalised input (B, C, h, w) or (B, C)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.drop(self.features(self.normalize(x)).flatten(1))
        with torch.autocast(device_type=f.device.type, enabled=False):  # coordinates in float32
            z = self.head(f.float())
        half = self.img_size / 2
        kp = z.view(-1, NUM_JOINTS, 2) * half + (half - 0.5)
        return {"kp": kp}

    def loss(self, out: dict, kp: Tensor, vis: Tensor | None = None) -> Tensor:
        """The configured coordinate loss (l2 = MSE in crop pixels^2)."""
        return coordinate_loss(out["kp"], kp, self.joint_weights(kp, vis), self.loss_kind)


def conv_bn_act(cin: int, cout: int, k: int | tuple[int, int] = 3, stride: int = 1,
                padding: int | tuple[int, int] | None = None, act: type[nn.Module] = nn.ReLU,
                norm: bool = True, eps: float = 1e-3, **act_kw) -> nn.Sequential:
    """Conv + BatchNorm(eps) + act(**act_kw), as an nn.Sequential (unpack it with * to splice the
    layers into another Sequential).

    The conv has a bias only when `norm=False`, which leaves out the BatchNorm. `padding`
    defaults to 'same' for odd kernels (k // 2 per axis); 0 gives 'valid'.
    """
    ks = (k, k) if isinstance(k, int) else k
    if padding is None:
        padding = (ks[0] // 2, ks[1] // 2)
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, ks, stride=stride, padding=padding, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout, eps=eps))
    layers.append(act(**act_kw))
    return nn.Sequential(*layers)


def drop_batchnorm_counters(model: nn.Module) -> nn.Module:
    """In place, for training speed: no `num_batches_tracked` in the BatchNorm layers with a momentum.

    In training BatchNorm adds 1 to that counter at every pass, one more kernel per layer (152 of
    IRv2's 1,940 per bf16 training step, 75 of Inception-v3's 777), though only `momentum=None` (a
    cumulative average) reads it. The statistics and the function stay as they were, and so do the
    state dicts: each layer writes a counter of 0 into them and drops the one it loads. lib.train
    and the speed benchmarks apply it; models from create_model keep their counters, since
    torch's `reset_running_stats`, SyncBatchNorm and `swa_utils.update_bn` (which sets
    momentum=None) need them."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None \
                and m.num_batches_tracked is not None:
            m.num_batches_tracked = None
            m.register_load_state_dict_pre_hook(_drop_loaded_counter)
            m.register_state_dict_post_hook(_write_counter)
    return model


def _drop_loaded_counter(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    state_dict.pop(prefix + "num_batches_tracked", None)


def _write_counter(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    state_dict[prefix + "num_batches_tracked"] = torch.zeros((), dtype=torch.long)


def merge_heads_state(state_dict: dict, heads: list[str], merged: str, conv: str = "conv", bn: str = "bn") -> None:
    """In place: the state of parallel Conv + BatchNorm layers (key prefixes `heads`, their parts named
    `conv` and `bn`) as that of one wider layer at prefix `merged`, concatenated on the output
    channels (checkpoints of a model from before its branches' heads were fused); the first
    layer's BatchNorm counter is kept."""
    for key in (f"{conv}.weight", f"{bn}.weight", f"{bn}.bias", f"{bn}.running_mean", f"{bn}.running_var"):
        state_dict[merged + key] = torch.cat([state_dict.pop(h + key) for h in heads])
    counts = [state_dict.pop(f"{h}{bn}.num_batches_tracked", None) for h in heads]
    if counts[0] is not None:
        state_dict[f"{merged}{bn}.num_batches_tracked"] = counts[0]
