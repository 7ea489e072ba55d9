"""The models a grid can name, and their defaults: the one registry, torch-free, so that
validating a grid needs no torch. `gridrun.spec` validates the `model:` section against
it; `gridrun.models` builds from it.

A grid's `model:` takes one of three forms:
  by name       {name: unet, base_channels: 16, depth: 4}, or a torchvision model's name
  smp           {library: smp, arch: Unet, encoder: resnet34, encoder_weights: imagenet}
  user builder  {target: "my_models:build", kwargs: {...}}
and any of them `weights: path/to/state_dict.pt`, loaded strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "MODEL_NAMES",
    "SMP",
    "SMP_DEFAULTS",
    "TARGET",
    "TORCHVISION_MODELS",
    "UNET",
    "UNET_BASE_CHANNELS",
    "UNET_DEPTH",
    "UNET_MAX_DEPTH",
    "describe",
]

# gridrun's own U-Net (gridrun.models.UNet); depth counts resolution levels
UNET = "unet"
UNET_BASE_CHANNELS = 16
UNET_DEPTH = 4
UNET_MAX_DEPTH = 7
# torchvision.models.segmentation builders and the fixed arguments each is called with;
# always untrained (torchvision's pretrained weights are for 21 VOC classes)
TORCHVISION_MODELS: dict[str, dict[str, Any]] = {
    "lraspp_mobilenet_v3_large": {},
    "deeplabv3_mobilenet_v3_large": {"aux_loss": False},
    "deeplabv3_resnet50": {"aux_loss": False},
    "fcn_resnet50": {"aux_loss": False},
}
MODEL_NAMES = (UNET, *TORCHVISION_MODELS)
# segmentation_models_pytorch (`library: smp`), with smp's own defaults; its architectures
# and encoders are checked against smp itself when the model is checked (gridrun plan)
SMP = "smp"
SMP_DEFAULTS: dict[str, Any] = {"encoder": "resnet34", "encoder_weights": "imagenet"}
# the builder key of the user-builder form (`target: "module:function"`)
TARGET = "target"


def describe(key: str, options: Mapping[str, Any]) -> str:
    """A model as messages and trackers name it, from the builder key and options that
    `gridrun.models.build_model` takes: its name, "smp Unet resnet34", or the target."""
    if key == SMP:
        return f"{SMP} {options['arch']} {options['encoder']}"
    if key == TARGET:
        return str(options["target"])
    return key
