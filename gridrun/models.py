"""Model constructors. Every model maps (N, C, H, W) floats to (N, K, H, W) logits,
K = 1 for binary masks (sigmoid head), K = num_classes otherwise (softmax head).

The forms a grid can name (gridrun.model_specs): gridrun's U-Net or a torchvision model
by name, a segmentation_models_pytorch architecture on an encoder, or the user's builder
by import path; any of them with local weights loaded strictly. `check_models` builds
each distinct model of a grid once on the CPU before Ray starts."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from gridrun.model_specs import (
    MODEL_NAMES,
    SMP,
    TARGET,
    TORCHVISION_MODELS,
    UNET,
    UNET_BASE_CHANNELS,
    UNET_DEPTH,
    describe,
)
from gridrun.spec import GridError
from gridrun.targets import TargetError, resolve_target

if TYPE_CHECKING:
    from gridrun.runs import RunPlan

__all__ = [
    "MODEL_NAMES",
    "ModelError",
    "UNet",
    "build_model",
    "check_models",
    "count_params",
    "load_weights",
]

# note: the check's batch side when the model accepts any: small, so the check is quick
_CHECK_SIDE = 32
_KEYS_SHOWN = 3


class ModelError(GridError):
    """A model the grid names cannot be imported, built, loaded or run as gridrun needs."""


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Ronneberger et al.'s U-Net. `depth` counts resolution levels (bottleneck included),
    so depth 4 pools three times; widths double per level from `base_channels`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int = UNET_BASE_CHANNELS,
        depth: int = UNET_DEPTH,
    ):
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        cin = in_channels
        for width in widths:
            self.down.append(_double_conv(cin, width))
            cin = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, width, 2, stride=2))
            self.merge.append(_double_conv(2 * width, width))
            cin = width
        self.head = nn.Conv2d(cin, out_channels, 1)
        self.multiple = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # note: pad to a multiple of the total stride so any image size works, crop at the end
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:
            # reflect needs padding smaller than the image (depth 7 pads a 32 px image by 32)
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)[..., :h, :w]


class _TorchvisionSegmentation(nn.Module):
    """torchvision's segmentation models return a dict and want 3 channels."""

    def __init__(self, net: nn.Module, in_channels: int):
        super().__init__()
        self.net = net
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)["out"]




def _torchvision(builder_name: str, **fixed) -> Callable[..., nn.Module]:
    def build(in_channels: int, out_channels: int, **_: object) -> nn.Module:
        from torchvision.models import segmentation

        builder = getattr(segmentation, builder_name)
        # untrained: no weights are downloaded, ever
        net = builder(weights=None, weights_backbone=None, num_classes=out_channels, **fixed)
        return _TorchvisionSegmentation(net, in_channels)

    return build


def _unet(
    in_channels: int,
    out_channels: int,
    base_channels: int = UNET_BASE_CHANNELS,
    depth: int = UNET_DEPTH,
) -> UNet:
    return UNet(in_channels, out_channels, base_channels, depth)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _smp_names(smp: Any, arch: str, encoder: str, encoder_weights: str | None) -> None:
    """Refuse an architecture, encoder or weights name smp does not know, naming the key."""
    archs = [cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()]
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ModelError(
            f"model.arch: smp has no architecture {arch!r}{_did_you_mean(arch, archs)}; "
            f"one of {', '.join(archs)}"
        )
    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:]):
            raise ModelError(f"model.encoder: timm has no model {encoder[3:]!r} ({encoder})")
        return
    known = smp.encoders.encoders
    if encoder not in known:
        raise ModelError(
            f"model.encoder: smp has no encoder {encoder!r}{_did_you_mean(encoder, known)} "
            "(or a timm model as 'tu-<name>')"
        )
    offered = known[encoder]["pretrained_settings"]
    if encoder_weights is not None and encoder_weights not in offered:
        raise ModelError(
            f"model.encoder_weights: {encoder} has the weights "
            f"{', '.join(offered) or 'none'}, not {encoder_weights!r}; or null (untrained)"
        )


def _smp(
    in_channels: int,
    out_channels: int,
    arch: str,
    encoder: str,
    encoder_weights: str | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    import segmentation_models_pytorch as smp

    _smp_names(smp, arch, encoder, encoder_weights)
    try:
        return smp.create_model(
            arch,
            encoder_name=encoder,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=out_channels,
            **kwargs,
        )
    except OSError as exc:
        # note: the Hugging Face hub's errors (offline, not cached) are OSErrors
        if encoder_weights is None:
            raise
        settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
        repo = settings.get(encoder_weights, {}).get("repo_id")
        where = f"huggingface.co/{repo}" if repo else "the Hugging Face hub"
        raise ModelError(
            f"model.encoder_weights: the {encoder_weights!r} weights of {encoder} are not on "
            f"this machine and cannot be downloaded from {where} ({_one_line(exc)}); run "
            "`gridrun plan` once with internet access (they are cached in "
            "~/.cache/huggingface), or set encoder_weights: null"
        ) from None


def _target(
    in_channels: int, out_channels: int, target: str, path: str | None, kwargs: dict[str, Any]
) -> nn.Module:
    try:
        build = resolve_target(target, path, "model.target")
    except TargetError as exc:
        raise ModelError(str(exc)) from None
    model = build(in_channels=in_channels, num_classes=out_channels, **kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model.target: {target} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    UNET: _unet,
    **{name: _torchvision(name, **fixed) for name, fixed in TORCHVISION_MODELS.items()},
    SMP: _smp,
    TARGET: _target,
}


def build_model(name: str, in_channels: int, num_classes: int, **options: object) -> nn.Module:
    """`num_classes` as in the grid file: 1 means binary (one logit channel). With
    `weights` (a path), that state dict is loaded strictly into the built model."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    weights = options.pop("weights", None)
    model = _BUILDERS[name](in_channels, num_classes, **options)
    if weights is not None:
        load_weights(model, str(weights))
    return model


def _keys(keys: Sequence[str], one: str, many: str) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN]) + (", ..." if len(keys) > _KEYS_SHOWN else "")
    return f"{len(keys)} {one if len(keys) == 1 else many} ({shown})"


def load_weights(model: nn.Module, path: str) -> None:
    """Load the state dict in `path` (or a gridrun checkpoint's) strictly into `model`;
    a file that is missing, unreadable or does not fit is a ModelError naming the keys."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"model.weights: {file}: no such file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"model.weights: cannot read {file}: {_one_line(exc)}") from None
    # a gridrun checkpoint (checkpoints/<trial>.pt) holds the state dict beside its epoch
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"model.weights: {file} holds a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    problems = []
    if missing := [k for k in own if k not in state]:
        problems.append(_keys(missing, "missing key", "missing keys"))
    if unexpected := [k for k in state if k not in own]:
        problems.append(_keys(unexpected, "unexpected key", "unexpected keys"))
    shaped = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and getattr(state[k], "shape", None) != own[k].shape
    ]
    if shaped:
        problems.append(_keys(shaped, "key of another shape", "keys of another shape"))
    if problems:
        raise ModelError(f"model.weights: {file} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def _input_multiple(model: nn.Module) -> int:
    """What an image side must be a multiple of: smp's encoders say (their output
    stride); gridrun's U-Net pads and torchvision's models interpolate: any side."""
    if getattr(model, "requires_divisible_input_shape", False):
        return int(getattr(getattr(model, "encoder", None), "output_stride", 1))
    return 1


def _check_model(plan: RunPlan, sizes: set[int]) -> None:
    label = describe(plan.model_name, plan.model_options)
    try:
        model = build_model(
            plan.model_name, plan.in_channels, plan.num_classes, **plan.model_options
        )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"model: {label} cannot be built: {_one_line(exc)}") from None
    multiple = _input_multiple(model)
    if bad := [size for size in sorted(sizes) if size % multiple]:
        raise ModelError(
            f"factors.image_size: {label} takes images whose side is a multiple of "
            f"{multiple}, not {bad[0]}"
        )
    # note: a user's builder says nothing of the sizes it takes: try the grid's smallest
    side = min(sizes)
    if plan.model_name != TARGET:
        side = min(side, multiple * -(-_CHECK_SIDE // multiple))
    x = torch.rand(2, plan.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:
        shape = "×".join(map(str, x.shape))
        raise ModelError(f"model: {label} fails on a batch of {shape}: {_one_line(exc)}") from None
    want = (2, plan.num_classes, side, side)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"model: {label} returns a {type(out).__name__}, not a tensor of logits")
    if tuple(out.shape) != want:
        per = "for binary masks" if plan.num_classes == 1 else "per class"
        raise ModelError(
            f"model: {label} gives logits of shape {tuple(out.shape)} for images of shape "
            f"{tuple(x.shape)}; gridrun needs {want}: one logit channel {per} "
            f"(data.num_classes {plan.num_classes})"
        )


def check_models(plans: Iterable[RunPlan]) -> None:
    """Build every distinct model of `plans` once on the CPU and run a batch of two small
    images through it, before Ray starts: a target that cannot be imported, weights that
    are missing or do not fit, pretrained weights that cannot be downloaded, an image
    size the model refuses, or logits that are not (N, K, H, W) with K the grid's
    num_classes each raise a ModelError of one line."""
    sizes: dict[str, set[int]] = {}
    first: dict[str, RunPlan] = {}
    for plan in plans:
        key = json.dumps(
            [plan.model_name, plan.model_options, plan.in_channels, plan.num_classes],
            sort_keys=True,
            default=str,
        )
        first.setdefault(key, plan)
        sizes.setdefault(key, set()).add(plan.image_size)
    for key, plan in first.items():
        _check_model(plan, sizes[key])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
