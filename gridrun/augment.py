"""Augmentation: the grid's `augment:` key and the transforms it names.

`augment:` is a preset (`none`, `flips`, `strong`), a list of named transforms (each a
name or a one-key mapping to its arguments; a preset in the list stands for its
transforms), or the user's builder `{target: "my_aug:build", kwargs: {...}}`. torchvision's
v2 transforms do the work, on `tv_tensors.Image` and `tv_tensors.Mask` together, so a
geometric transform moves image and mask alike and masks are resampled with nearest
interpolation: a label, `ignore_index` included, is moved, never blended. No named
transform leaves a pixel without a source (crops lie inside the image, rotations are by
multiples of 90° of a square image), so nothing is filled.

Each training sample is transformed alone, with torch's CPU generator (which v2 draws its
parameters from) and the device's generator (Gaussian noise) seeded from (seed, epoch,
sample index) inside `fork_rng`: a sample's augmentation depends on nothing else, so a run
shared to more epochs, a resumed run and any batch size or worker count see the same
images, and the rest of training draws the same numbers as without augmentation.

Importing this module needs no torch (the grid parser reads its names); the transforms
are built on the worker.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from gridrun.targets import module_file, resolve_target

if TYPE_CHECKING:
    import torch

    from gridrun.runs import RunPlan

__all__ = [
    "PRESETS",
    "TRANSFORMS",
    "Augmentation",
    "AugmentError",
    "Augmenter",
    "check_augmentations",
    "augmentation",
    "validate_augment",
    "with_folder",
]


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
    return value


# note: as in gridrun.spec, a YAML boolean is refused and a number in text (PyYAML reads
# 5e-2 as text) is read
_Number = Annotated[float, BeforeValidator(_not_bool)]
_Probability = Annotated[_Number, Field(ge=0, le=1)]
_NonNegative = Annotated[_Number, Field(ge=0)]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Flip(_Args):
    p: _Probability = 0.5


class _Rot90(_Args):
    """A rotation by 0, 90, 180 or 270 degrees, each as likely."""


class _RandomResizedCrop(_Args):
    # a crop of this share of the image's area and this aspect ratio, resized back to the
    # image size (torchvision's default scale, from 8 %, is meant for classification)
    scale: tuple[_Probability, _Probability] = (0.5, 1.0)
    ratio: tuple[Annotated[_Number, Field(gt=0)], Annotated[_Number, Field(gt=0)]] = (
        3 / 4,
        4 / 3,
    )


class _ColorJitter(_Args):
    # saturation and hue change only RGB images
    brightness: _NonNegative = 0.2
    contrast: _NonNegative = 0.2
    saturation: _NonNegative = 0.2
    hue: Annotated[_Number, Field(ge=0, le=0.5)] = 0.0


class _GaussianNoise(_Args):
    # added to the image scaled to [0, 1], then clipped to it
    mean: _Number = 0.0
    sigma: _NonNegative = 0.05


# the named transforms and the arguments each takes (with their defaults)
TRANSFORMS: dict[str, type[_Args]] = {
    "hflip": _Flip,
    "vflip": _Flip,
    "rot90": _Rot90,
    "random_resized_crop": _RandomResizedCrop,
    "color_jitter": _ColorJitter,
    "gaussian_noise": _GaussianNoise,
}
PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "flips": ("hflip", "vflip", "rot90"),
    "strong": (
        "hflip", "vflip", "rot90", "random_resized_crop", "color_jitter", "gaussian_noise",
    ),
}  # fmt: skip


class _Target(_Args):
    # "module:function"; the module is looked for first in `folder` (the grid file's
    # folder unless given; relative to it), then on the Python path
    target: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    folder: str | None = None


_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _refuse(loc: tuple[Any, ...], message: str, value: Any) -> ValidationError:
    """An error at `loc` under `augment`, which the grid parser names as a dotted key."""
    # note: with no context, pydantic shows the message as it is (braces too)
    error = PydanticCustomError("augment", message)
    return ValidationError.from_exception_data(
        "augment", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _checked(model: type[_Args], raw: Any, loc: tuple[Any, ...]) -> _Args:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        where = (*loc, *first["loc"])
        if first["type"] == "extra_forbidden":
            known = list(model.model_fields)
            hint = _did_you_mean(str(first["loc"][-1]), known) or (
                f"; it takes {', '.join(known)}" if known else "; it takes no arguments"
            )
            what = "key" if model is _Target else "argument"
            raise _refuse(where, f"unknown {what}{hint}", first["input"]) from None
        raise _refuse(where, str(first["msg"]), first["input"]) from None


def _name(word: Any, loc: tuple[Any, ...]) -> str:
    if isinstance(word, str) and (word in TRANSFORMS or word in PRESETS):
        return word
    names = [*PRESETS, *TRANSFORMS]
    raise _refuse(
        loc,
        f"unknown transform {word!r}{_did_you_mean(str(word), names)}; "
        f"one of {', '.join(names)}",
        word,
    )


def _item(raw: Any, loc: tuple[Any, ...]) -> str | dict[str, dict[str, Any]]:
    """One transform: a name as it is, or {name: its arguments, all of them}."""
    if isinstance(raw, str):
        return _name(raw, loc)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise _refuse(
            loc, "expected a transform's name or a one-key mapping to its arguments", raw
        )
    ((name, args),) = raw.items()
    name = _name(name, loc)
    if name in PRESETS:
        raise _refuse((*loc, name), "a preset takes no arguments", args)
    parsed = _checked(TRANSFORMS[name], {} if args is None else args, (*loc, name))
    return {name: parsed.model_dump(mode="json")}


def validate_augment(raw: Any) -> str | list[Any] | dict[str, Any] | None:
    """The grid's `augment:` value, checked, as plain YAML values: None (no augmentation),
    a preset name, a list of names and {name: arguments} mappings, or {target, kwargs,
    folder}."""
    if raw is None or isinstance(raw, str) and raw in PRESETS:
        return raw
    if isinstance(raw, dict) and "target" in raw:
        target = _checked(_Target, raw, ())
        assert isinstance(target, _Target)
        if not _TARGET.match(target.target):
            raise _refuse(
                ("target",),
                f"expected 'module:function', e.g. 'my_aug:build', not {target.target!r:.60}",
                target.target,
            )
        return target.model_dump(mode="json")
    if isinstance(raw, str | dict):
        # note: one transform is a list of one
        return [_item(raw, ())]
    if not isinstance(raw, list):
        raise _refuse(
            (),
            "expected a preset name, a list of transforms or {target: 'module:function'}",
            raw,
        )
    return [_item(item, (i,)) for i, item in enumerate(raw)]


def with_folder(value: Any, base: Path) -> Any:
    """`value` (validated) with a builder's folder made absolute, relative to `base` (the
    grid file's folder). Raises ValueError, naming the key, when the module is neither
    there nor on the Python path; the module itself is not run."""
    if not isinstance(value, dict):
        return value
    folder = (base / (value["folder"] or ".")).resolve()
    module = value["target"].split(":")[0]
    top = module.split(".")[0]
    if module_file(module, folder) is None and importlib.util.find_spec(top) is None:
        raise ValueError(
            f"augment.target: no module {module!r} in {folder} or on the Python path"
        )
    return {**value, "folder": str(folder)}


@dataclass(frozen=True)
class Augmentation:
    """What a training run augments with, as plain values; the worker builds it."""

    # (name, all its arguments), in the order applied
    transforms: tuple[tuple[str, dict[str, Any]], ...] = ()
    target: str | None = None  # "module:function", the user's builder
    kwargs: dict[str, Any] = field(default_factory=dict)
    folder: str | None = None

    def __bool__(self) -> bool:
        return bool(self.transforms) or self.target is not None


def augmentation(value: Any) -> Augmentation:
    """The validated `augment:` value as an Augmentation: presets expanded, defaults filled."""
    if value is None:
        return Augmentation()
    if isinstance(value, dict):
        return Augmentation(target=value["target"], kwargs=value["kwargs"], folder=value["folder"])
    items = [value] if isinstance(value, str) else value
    transforms: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, str) and item in PRESETS:
            names = PRESETS[item]
            transforms += [(n, TRANSFORMS[n]().model_dump(mode="json")) for n in names]
        elif isinstance(item, str):
            transforms.append((item, TRANSFORMS[item]().model_dump(mode="json")))
        else:
            ((name, args),) = item.items()
            transforms.append((name, args))
    return Augmentation(tuple(transforms))


def _build(name: str, args: dict[str, Any], image_size: int):
    from torchvision.transforms import v2

    if name == "hflip":
        return v2.RandomHorizontalFlip(**args)
    if name == "vflip":
        return v2.RandomVerticalFlip(**args)
    if name == "rot90":
        # note: torchvision rotates a square image by a multiple of 90° with torch.rot90
        return v2.RandomChoice([v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)])
    if name == "random_resized_crop":
        return v2.RandomResizedCrop(
            image_size, scale=tuple(args["scale"]), ratio=tuple(args["ratio"])
        )
    if name == "color_jitter":
        return v2.ColorJitter(**args)
    assert name == "gaussian_noise", name
    return v2.GaussianNoise(**args, clip=True)


class Augmenter:
    """A training run's augmentation, built on the worker: each sample of a batch
    transformed alone, seeded by (seed, epoch, its index in the training set)."""

    def __init__(self, aug: Augmentation, seed: int, image_size: int) -> None:
        from torchvision.transforms import v2

        self.seed = seed
        if aug.target is not None:
            self.transform = resolve_target(aug.target, aug.folder, "augment.target")(**aug.kwargs)
        else:
            self.transform = v2.Compose([_build(n, a, image_size) for n, a in aug.transforms])

    def _sample_seed(self, epoch: int, index: int) -> int:
        import numpy as np

        entropy = [self.seed, epoch, index]
        return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, indices: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images N×C×H×W (float, in [0, 1]) and masks N×H×W of the samples `indices`,
        augmented, on the device they came on."""
        import torch
        from torchvision import tv_tensors

        cuda = x.device.type == "cuda"
        gpu = x.device.index if x.device.index is not None or not cuda else None
        if cuda and gpu is None:
            gpu = torch.cuda.current_device()
        images, masks = [], []
        with torch.no_grad(), torch.random.fork_rng(devices=[gpu] if cuda else []):
            for i, index in enumerate(indices):
                seed = self._sample_seed(epoch, int(index))
                torch.default_generator.manual_seed(seed)
                if cuda:
                    torch.cuda.default_generators[gpu].manual_seed(seed)
                image, mask = self.transform(tv_tensors.Image(x[i]), tv_tensors.Mask(y[i]))
                if image.shape != x[i].shape or mask.shape != y[i].shape:
                    raise ValueError(
                        f"augment: the transform turned an image {tuple(x[i].shape)} and "
                        f"mask {tuple(y[i].shape)} into {tuple(image.shape)} and "
                        f"{tuple(mask.shape)}; it must keep their shapes"
                    )
                images.append(image.as_subclass(torch.Tensor).to(x.dtype))
                masks.append(mask.as_subclass(torch.Tensor).to(y.dtype))
        out = torch.stack(images)
        if x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out, torch.stack(masks)


class AugmentError(ValueError):
    """An augmentation that fails on a sample before Ray starts (one line)."""


def check_augmentations(plans: Iterable[RunPlan]) -> None:
    """Run every distinct augmentation of `plans` once on a blank sample of each image
    size, before Ray starts: a builder that raises, returns no transform or changes a
    sample's shape is refused with one line instead of failing every trial."""
    import torch

    seen: set[tuple[str, int, int]] = set()
    for plan in plans:
        key = (repr(plan.augment), plan.image_size, plan.in_channels)
        if not plan.augment or key in seen:
            continue
        seen.add(key)
        size, channels = plan.image_size, plan.in_channels
        x = torch.zeros(1, channels, size, size)
        y = torch.zeros(1, size, size, dtype=torch.uint8)
        try:
            Augmenter(plan.augment, plan.seed, size)(x, y, 1, [0])
        except Exception as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            text = lines[-1] if lines else type(exc).__name__
            prefix = "" if text.startswith("augment") else f"augment: {type(exc).__name__}: "
            raise AugmentError(f"{prefix}{text}"[:500]) from None
