"""Model registry: ``create_model(name, **kw)`` and ``list_models()``.

    from lib.models import create_model, list_models
    model = create_model("resnet34")                       # random init
    model = create_model("cpm", pretrained="outputs/runs/cpm/best.pt")   # local weights
    model = load_trained("outputs/runs/cpm_paper_cpu")                    # a run's trained model

Every model takes (B, 3, 128, 128) RGB 0..255 and returns a dict with "kp" (B, 21, 2) in crop
pixels; ``model.loss(out, kp, vis)`` is its training loss (see lib/models/base.py).
"""
from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lib import runs

from .base import KeypointModel, drop_batchnorm_counters
from .cpm import CPM
from .heatmap import HeatmapNet
from .irv2 import IRV2
from .regression import InceptionV3Regressor, ResNet34Regressor
from .simcc import SimCCNet

__all__ = ["create_model", "compile_model", "list_models", "load_weights", "load_trained", "KeypointModel",
           "MODERN_DEFAULT", "drop_batchnorm_counters"]

# name -> (factory, default kwargs, one-line description)
_REGISTRY: dict[str, tuple[Callable[..., KeypointModel], dict[str, Any], str]] = {
    "cpm": (CPM, {}, "Convolutional Pose Machine, 3 stages, 22 maps at stride 8 (report)"),
    "resnet34": (ResNet34Regressor, {}, "ResNet34 trunk, flatten 512x4x4, Linear 42 (report)"),
    "inception_v3": (InceptionV3Regressor, {}, "Inception-v3, global pooling, Linear 42 (report)"),
    "irv2": (IRV2, {}, "modified Inception-ResNet-v2 regressor (report)"),
    "hm_resnet18": (HeatmapNet, {"backbone": "resnet18"},
                    "resnet18 + FPN head, 21 maps at stride 4, integral regression (soft-argmax, L1)"),
    "hm_resnet18_64": (HeatmapNet, {"backbone": "resnet18", "input_size": 64},
                       "hm_resnet18 on the crop resized to 64x64: 16x16 maps, ~3x the images per second; "
                       "the modern default (learning curves, BENCHMARKS.md)"),
    "simcc_resnet18_64": (SimCCNet, {"backbone": "resnet18", "input_size": 64},
                          "resnet18 at 64x64 + SimCC head: per-joint tokens from stride 16, x/y logits at 2 bins "
                          "per crop px, KL + L1"),
}
MODERN_DEFAULT = "hm_resnet18_64"  # the modern model the notebooks and docs train: the learning curves' winner


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def describe_models() -> dict[str, str]:
    """Registered name -> one-line description."""
    return {k: _REGISTRY[k][2] for k in list_models()}


def create_model(name: str, pretrained: str | os.PathLike | None = None, **kw: Any) -> KeypointModel:
    """Build a registered model (random init); `pretrained` = path of a local state dict to load."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    factory, defaults, _ = _REGISTRY[name]
    why = model_kwargs_error(name, kw)
    if why:
        raise ValueError(f"model_kwargs for {name}: {why}")
    try:
        model = factory(**{**defaults, **kw})
    except TypeError as e:  # e.g. an option the timm backbone does not take
        raise ValueError(f"model_kwargs for {name}: {e}") from e
    model.name = name
    if pretrained is not None:
        load_weights(model, pretrained)
    return model


def compile_model(model: nn.Module) -> nn.Module:
    """torch.compile for training (`--compile`; `model` may be wrapped in DistributedDataParallel).
    A model that names its repeated blocks (`compile_regions`) has each instance compiled in place,
    so identical blocks share one compiled graph (IRv2 on a CPU: 41 s to the first step instead of
    134 s), and the same object comes back; any other model is compiled whole."""
    regions = getattr(getattr(model, "module", model), "compile_regions", ())
    if not regions:
        return torch.compile(model)
    for m in model.modules():
        if isinstance(m, regions):
            m.compile()
    return model


def model_kwargs_error(name: str, kwargs: object) -> str | None:
    """Why these keyword arguments cannot build the registered model (None: they may)."""
    if not isinstance(kwargs, dict):
        return f"expected a JSON object of keyword arguments, found {type(kwargs).__name__}"
    params = inspect.signature(_REGISTRY[name][0]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None  # passed on (e.g. to the timm backbone), checked when the model is built
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        return f"unknown {unknown}; {name} takes {sorted(k for k in params if k != 'self')}"
    return None


def _state_dict_of(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file that is not a checkpoint of lib.train: a bare state
    dict, or a dict with a 'state_dict' / 'model_state' / 'model' entry (other tools' formats)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ValueError(f"{path}: not a model checkpoint (expected a state dict of tensors, or a dict "
                     f"with a 'model' / 'state_dict' entry; found {type(obj).__name__})")


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a local checkpoint into `model`, refusing a corrupt file or another architecture.

    A checkpoint of lib.train gives the weights its run validated (lib.runs.checkpoint_weights:
    EMA when kept) and must be of the same registered model; any other file is a state dict."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or not a torch file
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    name = getattr(model, "name", type(model).__name__)
    if runs.is_checkpoint(obj):
        found = obj["config"].get("model")
        if found != name:
            raise ValueError(f"{path} is a checkpoint of model {found!r}, not {name!r}")
        sd = runs.checkpoint_weights(obj)
    else:
        sd = _state_dict_of(obj, path)
    sd = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in sd.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:  # an older layout the model's load hooks map (e.g. FusedHeads) still loads
        try:
            copy.deepcopy(model).load_state_dict(sd, strict=True)  # a copy: a refused file leaves no trace
            missing = unexpected = wrong = []
        except RuntimeError:
            pass
    if missing or unexpected or wrong:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
        parts = [f"{len(missing)} missing keys: {few(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected keys: {few(unexpected)}" if unexpected else "",
                 f"{len(wrong)} shape mismatches: {few(wrong)}" if wrong else ""]
        raise ValueError(f"{path} is not a checkpoint of model {name!r} with these settings: "
                         + "; ".join(p for p in parts if p))
    model.load_state_dict(sd, strict=True)
    return model


def load_trained(run_or_checkpoint: str | os.PathLike, which: str = "best", device: str = "cpu",
                 expect: str | None = None) -> KeypointModel:
    """The trained model of a run directory (its best.pt or last.pt) or of a checkpoint file of
    lib.train, built with the run's settings, with the weights its run validated, in eval mode.
    `expect`: the model name it must be (e.g. the run's config.json); another is refused."""
    path = Path(run_or_checkpoint)
    state = runs.read_checkpoint(path if path.is_file() else runs.Run(path).checkpoint_path(which), expect)
    cfg = state["config"]
    model = create_model(cfg["model"], **cfg.get("model_kwargs", {}))
    model.load_state_dict(runs.checkpoint_weights(state))
    return model.to(device).eval()
