"""The grid file: parse, validate, expand to cells and trials. Pure: no Ray, no torch."""

from __future__ import annotations

import difflib
import itertools
import math
import re
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from gridrun.augment import validate_augment, with_folder
from gridrun.claims import Claims
from gridrun.layout import (
    FACTORS,
    GROUPED_KEY,
    OVERLAY_IMAGES,
    RENAMED_KEYS,
    cell_id,
    factor_names,
    num_labels,
    trial_id,
)
from gridrun.model_specs import (
    MODEL_NAMES,
    SMP,
    SMP_DEFAULTS,
    TARGET,
    UNET,
    UNET_BASE_CHANNELS,
    UNET_DEPTH,
    UNET_MAX_DEPTH,
    describe,
)
from gridrun.sources import TORCHVISION_SOURCES

__all__ = [
    "FACTORS",
    "MODEL_NAMES",
    "TOTAL_EPOCH_SCHEDULES",
    "Cell",
    "Grid",
    "RenamedKeyWarning",
    "GridError",
    "Trial",
    "effective_lr",
    "load_grid",
    "parse_grid",
    "renamed_keys",
    "steps_per_cell",
]

# learning-rate schedules whose value at an epoch depends on the total epoch count
TOTAL_EPOCH_SCHEDULES = ("poly", "cosine")


# note: NumPy takes no negative seed; this range also suits torch and int64 columns
_MAX_SEED = 2**32 - 1
# note: keeps steps and pixel counts within int64 table columns and float estimates
_MAX_LEVEL = 2**31 - 1


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {_shown(value)}")
    return value


# note: every integer setting is a StrictInt, so a YAML boolean, a float (2.0 too) or a
# quoted number is refused rather than coerced (pydantic's lax mode reads true as 1); a
# float setting takes an integer and, as PyYAML reads 1e-3 as text, a number in text, but
# never a boolean
_PositiveInt = Annotated[StrictInt, Field(gt=0)]
_NOT_BOOL = BeforeValidator(_not_bool)
_PositiveFloat = Annotated[float, _NOT_BOOL, Field(gt=0)]


def _no_nul(value: Path | None) -> Path | None:
    # note: a double-quoted YAML string can hold a NUL, which no file path may hold
    if value is not None and "\0" in str(value):
        raise ValueError("a path cannot hold a NUL character")
    return value


class GridError(ValueError):
    """A problem the user can fix in the grid file; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    source: Literal["synthetic", "folder", "torchvision"] = "synthetic"
    path: Path | None = None
    # torchvision: which data set, the folder holding it (relative to the grid file) and
    # the split whose images form the pool, split again into training and validation
    name: str | None = None
    root: Path | None = None
    split: str | None = None
    val_fraction: Annotated[float, _NOT_BOOL, Field(gt=0, lt=1)] = 0.2
    val_size: _PositiveInt | None = None
    # an optional test split, drawn after validation: scored every epoch like validation,
    # never used to train or to pick an epoch (give at most one of the two)
    test_fraction: Annotated[float, _NOT_BOOL, Field(gt=0, le=0.5)] | None = None
    test_size: _PositiveInt | None = None
    # masks are uint8 labels: at most 255 classes
    num_classes: Annotated[StrictInt, Field(ge=1, le=255)] = 1
    # mask value left out of the loss and the metrics (borders, void); torchvision: 255
    ignore_index: Annotated[StrictInt, Field(ge=0, le=255)] | None = None
    # note: every cell is scored at this one resolution; default = largest image_size
    eval_size: _PositiveInt | None = None
    # seeds the train/validation split and, for synthetic data, the scenes themselves
    split_seed: Annotated[StrictInt, Field(ge=0, le=_MAX_SEED)] = 0
    # synthetic only: how many scenes exist; default = exactly what the grid needs
    num_images: _PositiveInt | None = None
    # folder and torchvision data whose prepared arrays exceed this many MB stream
    # through Ray Data (gridrun.streaming); default: half the cluster's object store
    memory_budget_mb: Annotated[float, _NOT_BOOL, Field(ge=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _torchvision_defaults(cls, raw: Any) -> Any:
        # note: filled in before validation, so the resolved grid file shows them
        if not isinstance(raw, dict) or raw.get("source") != "torchvision":
            return raw
        defaults: dict[str, Any] = {"ignore_index": 255}
        name = raw.get("name")
        if isinstance(name, str) and name in TORCHVISION_SOURCES:
            source = TORCHVISION_SOURCES[name]
            defaults.update(num_classes=source.classes[0], split=source.splits[0])
        return {**defaults, **raw}

    _openable = field_validator("path", "root")(_no_nul)

    @model_validator(mode="after")
    def _source_keys(self) -> DataConfig:
        if self.source == "folder" and self.path is None:
            raise ValueError("path: required when source is 'folder'")
        if self.source != "torchvision":
            for key in ("name", "root", "split"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only for source 'torchvision'")
        else:
            self._torchvision_keys()
        if self.test_fraction is not None and self.test_size is not None:
            raise ValueError("test_size: give test_fraction or test_size, not both")
        if self.val_size is None and self.val_fraction + (self.test_fraction or 0) >= 1:
            raise ValueError(
                f"test_fraction: {self.test_fraction} with val_fraction {self.val_fraction} "
                "leaves no images to train"
            )
        labels = num_labels(self.num_classes)
        if self.ignore_index is not None and self.ignore_index < labels:
            raise ValueError(
                f"ignore_index: {self.ignore_index} is a class label when num_classes is "
                f"{self.num_classes}; use a value from {labels} to 255, e.g. 255"
            )
        return self

    def _torchvision_keys(self) -> None:
        for key in ("name", "root"):
            if getattr(self, key) is None:
                raise ValueError(f"{key}: required when source is 'torchvision'")
        if self.name not in TORCHVISION_SOURCES:
            known = ", ".join(TORCHVISION_SOURCES)
            raise ValueError(
                f"name: unknown data set {self.name!r}"
                f"{_did_you_mean(str(self.name), TORCHVISION_SOURCES)}; one of {known}"
            )
        if self.path is not None:
            raise ValueError("path: for folder data; a torchvision data set lies in root")
        source = TORCHVISION_SOURCES[self.name]
        classes, splits = source.classes, source.splits
        if self.num_classes not in classes:
            raise ValueError(
                f"num_classes: {self.name} is read with num_classes "
                f"{' or '.join(map(str, classes))}, not {self.num_classes}"
            )
        if self.split not in splits:
            raise ValueError(
                f"split: {self.name} has the splits {', '.join(splits)}, not {self.split!r}"
            )
        if self.ignore_index is None:
            raise ValueError(
                f"ignore_index: {self.name} masks mark void pixels; give the value that "
                "stands for them (default 255)"
            )

    def relative_to(self, base: Path) -> DataConfig:
        """This config with a relative `path` or `root` taken relative to `base`."""
        update = {
            key: (base / value).resolve()
            for key in ("path", "root")
            if (value := getattr(self, key)) is not None and not value.is_absolute()
        }
        return self.model_copy(update=update)


# a target is "module:function" (or Hydra's dotted "module.function")
_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*[:.][A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# the keys of each form of `model:` (gridrun.model_specs); `weights` goes with any
_FORM_KEYS = {
    "name": ("name", "base_channels", "depth"),
    SMP: ("library", "arch", "encoder", "encoder_weights", "kwargs"),
    TARGET: ("target", "path", "kwargs"),
}


class ModelConfig(_Strict):
    """One form of `model:`: by name, `library: smp`, or the user's `target`."""

    # by name: gridrun's U-Net or a torchvision model
    name: str | None = None
    base_channels: _PositiveInt | None = None
    depth: Annotated[StrictInt, Field(ge=1, le=UNET_MAX_DEPTH)] | None = None
    # segmentation_models_pytorch: an architecture on an encoder, its weights or null
    library: Literal["smp"] | None = None
    arch: Annotated[str, Field(min_length=1)] | None = None
    encoder: Annotated[str, Field(min_length=1)] | None = None
    encoder_weights: Annotated[str, Field(min_length=1)] | None = None
    # the user's builder, imported from `path` (default: the grid file's folder) and
    # called with in_channels, num_classes and `kwargs` (smp: also passed on)
    target: str | None = None
    path: Path | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # a state dict (or a gridrun checkpoint) loaded strictly into the built model
    weights: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _form_defaults(cls, raw: Any) -> Any:
        # note: filled in before validation, so the resolved grid file shows them
        if not isinstance(raw, dict):
            return raw
        if raw.get("library") == SMP:
            return {**SMP_DEFAULTS, **raw}
        if "library" in raw or "target" in raw:
            return raw
        return {"name": UNET, "base_channels": UNET_BASE_CHANNELS, "depth": UNET_DEPTH, **raw}

    @field_validator("name")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        if name is not None and name not in MODEL_NAMES:
            raise ValueError(f"unknown model {name!r}{_did_you_mean(name, MODEL_NAMES)}")
        return name

    @field_validator("target")
    @classmethod
    def _importable(cls, target: str | None) -> str | None:
        if target is not None and not _TARGET.fullmatch(target):
            raise ValueError(f"expected 'module:function', e.g. 'my_models:build', not {target!r}")
        return target

    _openable = field_validator("path", "weights")(_no_nul)

    @model_validator(mode="after")
    def _one_form(self) -> ModelConfig:
        if self.library is not None and self.target is not None:
            raise ValueError("target: give library or target, not both")
        if self.library is not None:
            for key in ("arch", "encoder"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: required with library {SMP!r}")
        if self.form == "name" and self.name is None:
            raise ValueError(f"name: expected a model name, e.g. {UNET!r}, not null")
        keys = _FORM_KEYS[self.form]
        for other in ("name", "base_channels", "depth", *_FORM_KEYS[SMP], "target", "path"):
            if other not in keys and getattr(self, other) not in (None, {}):
                raise ValueError(f"{other}: not for {_FORM_TEXT[self.form]}")
        return self

    @model_serializer(mode="wrap")
    def _form_only(self, handler: Any) -> dict[str, Any]:
        # note: unset keys are left out, so a model by name reads as it always has; smp's
        # encoder_weights stays even when null (null means untrained, not smp's default)
        kept = {"encoder_weights"} if self.library == SMP else set()
        return {k: v for k, v in handler(self).items() if k in kept or v not in (None, {})}

    @property
    def form(self) -> str:
        """"name", "smp" or "target": which form of `model:` this is."""
        return SMP if self.library else TARGET if self.target else "name"

    @property
    def label(self) -> str:
        """The model as trackers show it: its name, "smp Unet resnet34", or the target."""
        return describe(*self.build_args())

    def build_args(self) -> tuple[str, dict[str, Any]]:
        """The builder key and the options `gridrun.models.build_model` takes."""
        if self.library == SMP:
            key = SMP
            options: dict[str, Any] = {
                "arch": self.arch,
                "encoder": self.encoder,
                "encoder_weights": self.encoder_weights,
                "kwargs": dict(self.kwargs),
            }
        elif self.target is not None:
            key = TARGET
            path = str(self.path) if self.path is not None else None
            options = {"target": self.target, "path": path, "kwargs": dict(self.kwargs)}
        else:
            key = str(self.name)
            options = (
                {"base_channels": self.base_channels, "depth": self.depth}
                if self.name == UNET
                else {}
            )
        if self.weights is not None:
            options["weights"] = str(self.weights)
        return key, options

    def relative_to(self, base: Path) -> ModelConfig:
        """This config with a relative `weights` or `path` taken relative to `base`, and a
        target imported from `base` unless `path` says where."""
        update: dict[str, Any] = {
            key: (base / value).resolve()
            for key in ("weights", "path")
            if (value := getattr(self, key)) is not None and not value.is_absolute()
        }
        if self.target is not None and self.path is None:
            update["path"] = base.resolve()
        return self.model_copy(update=update)


_FORM_TEXT = {
    "name": "a model by name",
    SMP: f"library {SMP!r}",
    TARGET: "a target (the user's builder)",
}


class TrainConfig(_Strict):
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: _PositiveFloat = 1e-3
    lr_scaling: Literal["none", "linear"] = "none"
    # linear scaling: lr × batch_size / lr_base_batch (Goyal et al.); default = smallest batch
    lr_base_batch: Annotated[StrictInt, Field(ge=1, le=_MAX_LEVEL)] | None = None
    loss: Literal["bce_dice", "bce", "dice", "ce", "ce_dice"] = "bce_dice"
    weight_decay: Annotated[float, _NOT_BOOL, Field(ge=0)] = 0.0
    momentum: Annotated[float, _NOT_BOOL, Field(ge=0, lt=1)] = 0.9
    # constant | warmup_constant (linear warm-up, then constant) | poly (torchvision's
    # segmentation reference: (1 - step/total)^0.9 after warm-up) | cosine (to 0)
    schedule: Literal["constant", "warmup_constant", "poly", "cosine"] = "constant"
    warmup_epochs: Annotated[StrictInt, Field(ge=0)] = 0
    # note: cells that differ only in epochs share one training run (their curves are
    # prefixes of the longest one) unless the schedule looks at the total epoch count
    share_epochs: bool = True
    # GPU only: bf16 autocast where the GPU supports it (else fp16 with a grad scaler)
    amp: Literal["auto"] | bool = "auto"
    channels_last: Literal["auto"] | bool = "auto"
    # GPU only: torch.compile with CUDA graphs; worth its ~20 s per run once a run lasts
    # minutes, since small models are otherwise bound by kernel launches
    compile: bool = False


# the settings a factor may name besides the four: their section and field; a path
# elsewhere is refused with the reason (`_FIXED`), an unknown one with a did-you-mean
_SECTIONS = ("train", "model")
_TOP_SETTINGS = ("augment",)
_FIXED = {
    "data": "the data is prepared once for the whole grid",
    "resources": "resources are the cluster's, the same for every cell",
    "tracking": "tracking is the study's, the same for every cell",
    "seeds": "seeds are crossed with every cell already",
    "name": "the name is the study's",
    "claims": "claims are about the factors",
    "nuisance": "nuisance names factors",
    "factors": "factors cannot be factors",
    "model.path": "a builder's folder is resolved once, from the grid file",
    "model.weights": "weights files are resolved once, from the grid file",
    "model.kwargs": "a mapping is not a level; vary a named setting",
}
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _setting_paths() -> list[str]:
    sections = {"train": TrainConfig, "model": ModelConfig}
    paths = [f"{s}.{f}" for s in _SECTIONS for f in sections[s].model_fields]
    return [p for p in paths if p not in _FIXED] + list(_TOP_SETTINGS)


def _check_path(path: str) -> None:
    """Raise ValueError unless `path` names a setting that can vary per cell."""
    if path in _setting_paths():
        return
    reason = _FIXED.get(path) or _FIXED.get(path.split(".")[0])
    if reason is not None:
        raise ValueError(f"factors.{_key_text(path)}: cannot vary per cell ({reason})")
    choices = [*FACTORS, *_setting_paths()]
    # note: `lr` alone means train.lr, though difflib finds them too far apart
    ends = [p for p in choices if p.endswith(f".{path}")]
    hint = f" (did you mean {ends[0]!r}?)" if len(ends) == 1 else _did_you_mean(path, choices)
    raise ValueError(
        f"factors.{_key_text(path)}: unknown key{hint}; a factor is "
        "one of the four or a setting's dotted path, e.g. train.lr"
    )


def _level(path: str, value: Any) -> Any:
    """A level as read: a number in text (PyYAML reads 3e-4 as text) is the number."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"factors.{_key_text(path)}: level nan; a level is a finite number")
    if value is None or isinstance(value, list | dict) or value in (math.inf, -math.inf):
        raise ValueError(
            f"factors.{_key_text(path)}: level {_shown(value)}; a level is a finite number, "
            "text or a boolean"
        )
    return value


def _kind(value: Any) -> str:
    return "boolean" if isinstance(value, bool) else "text" if isinstance(value, str) else "number"


def _checked_levels(path: str, levels: list[Any]) -> list[Any]:
    """The levels of a setting factor, checked, in order: one kind, no repeats."""
    if not levels:
        raise ValueError(f"factors.{_key_text(path)}: needs at least one level")
    kinds = {_kind(v) for v in levels}
    if len(kinds) > 1:
        raise ValueError(
            f"factors.{_key_text(path)}: mixes {' and '.join(sorted(kinds))} levels {levels}"
        )
    if len(set(levels)) != len(levels):
        dupes = sorted({v for v in levels if levels.count(v) > 1})
        raise ValueError(f"factors.{_key_text(path)}: duplicated level(s) {dupes}")
    return sorted(levels)


class Factors(_Strict):
    """The four factors' levels, and the settings varied as factors: `settings` holds
    each crossed setting's levels by its dotted path (train.lr), `grouped` the levels
    set together ([{batch_size: 4, train.lr: 3e-4}, ...]). A core factor in `grouped`
    holds its distinct levels there and is crossed with nothing."""

    image_size: list[StrictInt]
    dataset_size: list[StrictInt]
    epochs: list[StrictInt]
    batch_size: list[StrictInt]
    settings: dict[str, list[Any]] = {}
    grouped: list[dict[str, Any]] = []

    @model_validator(mode="before")
    @classmethod
    def _split(cls, raw: Any) -> Any:
        # note: the file spells settings by their dotted paths beside the four; they are
        # checked here (paths, kinds, repeats) and applied to the grid in Grid._consistent
        if not isinstance(raw, dict):
            return raw
        out: dict[Any, Any] = {}
        settings: dict[str, list[Any]] = {}
        for key, levels in raw.items():
            if key in FACTORS or key == GROUPED_KEY or not isinstance(key, str):
                out[key] = levels
                continue
            _check_path(key)
            if not isinstance(levels, list):
                raise ValueError(f"factors.{_key_text(key)}: expected a list of levels")
            settings[key] = _checked_levels(key, [_level(key, v) for v in levels])
        if GROUPED_KEY in out:
            groups = _checked_groups(out[GROUPED_KEY], set(out) | set(settings))
            out[GROUPED_KEY] = groups
            for name in FACTORS:
                if groups and name in groups[0]:
                    out[name] = sorted({g[name] for g in groups}, key=_sort_key)
        return {**out, "settings": dict(sorted(settings.items()))}

    @field_validator(*FACTORS)
    @classmethod
    def _levels(cls, levels: list[int]) -> list[int]:
        if not levels:
            raise ValueError("needs at least one level")
        dupes = sorted({v for v in levels if levels.count(v) > 1})
        if dupes:
            raise ValueError(f"duplicated level(s) {dupes}")
        bad = [v for v in levels if v <= 0]
        if bad:
            raise ValueError(f"levels must be positive, got {bad}")
        if max(levels) > _MAX_LEVEL:
            raise ValueError(f"levels must be at most {_MAX_LEVEL}")
        # note: kept sorted, so a file listing levels in another order is the same grid
        return sorted(levels)

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> dict[str, Any]:
        # note: as the file spells them, so a grid without settings reads as it always has
        dumped = handler(self)
        grouped = set(self.grouped[0]) if self.grouped else set()
        out = {k: dumped[k] for k in FACTORS if k not in grouped}
        out.update(dumped["settings"])
        if self.grouped:
            out[GROUPED_KEY] = dumped["grouped"]
        return out

    @property
    def grouped_names(self) -> tuple[str, ...]:
        """The factors set together by `grouped`, in name order."""
        return tuple(sorted(self.grouped[0])) if self.grouped else ()

    def setting_levels(self) -> dict[str, list[Any]]:
        """Every level of each setting factor, crossed or grouped."""
        levels = {path: list(values) for path, values in self.settings.items()}
        for name in self.grouped_names:
            if name not in FACTORS:
                levels[name] = sorted({g[name] for g in self.grouped}, key=_sort_key)
        return levels


def _sort_key(value: Any) -> tuple[str, Any]:
    return (_kind(value), value)


def _checked_groups(raw: Any, crossed: set[Any]) -> list[dict[str, Any]]:
    """`grouped:`, checked: a list of mappings naming the same keys, each a factor not
    also crossed, with no group twice; sorted, so the file's order does not matter."""
    where = f"factors.{GROUPED_KEY}"
    if not isinstance(raw, list) or not raw or not all(isinstance(g, dict) and g for g in raw):
        raise ValueError(
            f"{where}: expected a list of mappings of levels set together, "
            "e.g. [{batch_size: 4, train.lr: 3.0e-4}]"
        )
    keys = set(raw[0])
    groups: list[dict[str, Any]] = []
    for i, group in enumerate(raw):
        if set(group) != keys:
            raise ValueError(
                f"{where}[{i}]: names {sorted(map(str, group))}, not {sorted(map(str, keys))} "
                "as the first group does; each group names the same keys"
            )
        checked: dict[str, Any] = {}
        for key, value in group.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}[{i}]: a key must be a string, not {type(key).__name__}")
            if key in crossed:
                raise ValueError(
                    f"{where}[{i}].{_key_text(key)}: {key} is crossed too; a factor is either "
                    "crossed or grouped"
                )
            if key not in FACTORS:
                _check_path(key)
                value = _level(key, value)
            elif value is None or isinstance(value, list | dict):
                raise ValueError(f"{where}[{i}].{key}: expected an integer, not {_shown(value)}")
            checked[key] = value
        groups.append(checked)
    for key in sorted(keys):
        kinds = {_kind(g[key]) for g in groups}
        if len(kinds) > 1:
            raise ValueError(f"{where}: {key} mixes {' and '.join(sorted(kinds))} levels")
    ordered = sorted(groups, key=lambda g: tuple(_sort_key(g[k]) for k in sorted(keys)))
    for a, b in itertools.pairwise(ordered):
        if a == b:
            raise ValueError(f"{where}: the group {a} is given twice")
    return ordered


class Resources(_Strict):
    workers_per_unit: _PositiveInt = 1
    use_gpu: Literal["auto"] | bool = "auto"
    cpus_per_worker: _PositiveFloat = 1
    gpus_per_worker: _PositiveFloat = 1
    # extra custom Ray resources each worker needs, e.g. {"fake_gpu": 1}
    custom: dict[str, _PositiveFloat] = Field(default_factory=dict)
    max_concurrent_units: Literal["auto"] | _PositiveInt = "auto"
    # short training runs share one long-lived TorchTrainer worker group (one start-up)
    pack: bool = True
    # work units pull their runs from the driver's queue, longest first; false: the runs
    # are packed into units up front from their estimated times (the older design)
    queue: bool = True
    # times a training run restarts from its last epoch after a lost worker or node
    max_restarts: Annotated[StrictInt, Field(ge=0)] = 2
    # on GPUs, small training runs ask for 1/2 or 1/4 of a GPU (gridrun.runs.gpu_share)
    share_gpus: Literal["auto", False] = "auto"

    @field_validator("share_gpus", mode="before")
    @classmethod
    def _share_gpus(cls, value: Any) -> Any:
        # note: a Literal alone takes 0 for false
        if value != "auto" and value is not False:
            raise ValueError(f"expected auto or false, not {_shown(value)}")
        return value


class TrackingConfig(_Strict):
    tensorboard: bool = True
    # an MLflow tracking URI (sqlite:///mlflow.db, a folder, or a server); none = off
    mlflow: str | None = None
    # predictions of a few fixed validation images every this many epochs (and at
    # every cell's own last epoch), for TensorBoard and the report's overlays
    overlay_every: _PositiveInt = 5
    overlay_images: Annotated[StrictInt, Field(ge=0, le=16)] = OVERLAY_IMAGES


class Grid(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "grid"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    factors: Factors
    seeds: list[StrictInt] = [0]
    resources: Resources = Resources()
    tracking: TrackingConfig = TrackingConfig()
    # the training images' augmentation: a preset (none, flips, strong), a list of named
    # transforms, or {target: "module:function", kwargs: {...}} (see gridrun.augment);
    # null, like none, is no augmentation (and reads a study written before this key)
    augment: Annotated[Any, BeforeValidator(validate_augment)] = None
    # claims about the factors, judged in the report next to the rules of thumb
    claims: Claims = []
    # factors the report isolates over: it compares the others at each one's best level
    # of these (the Playbook's nuisance hyperparameters), as well as averaged
    nuisance: list[str] = []

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"duplicated seed(s) in {seeds}")
        bad = [seed for seed in seeds if not 0 <= seed <= _MAX_SEED]
        if bad:
            raise ValueError(f"must be from 0 to {_MAX_SEED}, got {bad}")
        return sorted(seeds)

    @field_validator("nuisance")
    @classmethod
    def _nuisance(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError(f"duplicated factor(s) in {names}")
        if "epochs" in names:
            raise ValueError(
                "epochs is read off each training run, not a setting to isolate over"
            )
        return sorted(names)

    @model_validator(mode="after")
    def _consistent(self) -> Grid:
        f = self.factors
        names = factor_names(self.factors.model_dump(mode="json"))
        for name in self.nuisance:
            if name not in names:
                raise ValueError(
                    f"nuisance: {name!r} is not a factor{_did_you_mean(name, names)}; "
                    f"one of {', '.join(names)}"
                )
        for i, claim in enumerate(self.claims):
            if claim.factor not in names:
                raise ValueError(
                    f"claims[{i}].factor: {claim.factor!r} is not a factor of this grid"
                    f"{_did_you_mean(claim.factor, names)}; one of {', '.join(names)}"
                )
        if max(f.batch_size) > min(f.dataset_size):
            raise ValueError(
                f"factors.batch_size: batch {max(f.batch_size)} is larger than "
                f"dataset_size {min(f.dataset_size)}"
            )
        workers = self.resources.workers_per_unit
        if workers > min(f.batch_size):
            raise ValueError(
                f"resources.workers_per_unit: {workers} workers cannot share "
                f"a batch of {min(f.batch_size)}"
            )
        if not f.setting_levels():
            self._check_settings()
            return self
        self._check_levels()
        for cell in self.cells():
            try:
                self.for_cell(cell)._check_settings()
            except ValueError as exc:
                raise ValueError(f"{_error_text(exc)} (in cell {cell.cell_id})") from None
        return self

    def _check_levels(self) -> None:
        """Each setting factor's levels, each applied alone to this grid."""
        for path, levels in self.factors.setting_levels().items():
            for level in levels:
                try:
                    _applied(self, {path: level})
                except ValueError as exc:
                    raise ValueError(
                        f"factors.{_key_text(path)}: level {level!r} is refused "
                        f"({_error_text(exc)})"
                    ) from None

    def _check_settings(self) -> None:
        """The settings' agreement with each other and with the factors' levels."""
        f = self.factors
        if self.train.loss in ("bce", "bce_dice") and self.data.num_classes > 1:
            raise ValueError(
                f"train.loss: {self.train.loss!r} is for binary masks; use 'ce' or 'ce_dice' "
                f"with num_classes {self.data.num_classes}"
            )
        if self.train.loss in ("ce", "ce_dice") and self.data.num_classes == 1:
            raise ValueError(f"train.loss: {self.train.loss!r} needs data.num_classes > 1")
        if self.train.warmup_epochs >= max(f.epochs) and self.train.schedule != "constant":
            raise ValueError(
                f"train.warmup_epochs: {self.train.warmup_epochs} warm-up epochs leave none "
                f"of the longest cell's {max(f.epochs)}"
            )

    def epochs_shared(self) -> bool:
        """Whether cells differing only in epochs can share one training run."""
        return self.share_reason() is None

    def share_reason(self) -> str | None:
        """Why cells differing only in epochs must each train alone, or None."""
        if len(self.factors.epochs) == 1:
            return "one epochs level: nothing to share"
        if not self.train.share_epochs:
            return "train.share_epochs is false"
        if self.train.schedule in TOTAL_EPOCH_SCHEDULES:
            return (
                f"train.schedule {self.train.schedule!r} depends on the total epoch count, "
                "so each epochs level trains separately"
            )
        return None

    @property
    def eval_size(self) -> int:
        return self.data.eval_size or max(self.factors.image_size)

    def cells(self) -> list[Cell]:
        f = self.factors
        grouped = f.grouped_names
        crossed = [(n, getattr(f, n)) for n in FACTORS if n not in grouped]
        crossed += sorted(f.settings.items())
        names = [n for n, _ in crossed]
        cells = []
        combos = itertools.product(*(levels for _, levels in crossed), f.grouped or [{}])
        for *combo, group in combos:
            values = {**dict(zip(names, combo, strict=True)), **group}
            settings = tuple(sorted((k, v) for k, v in values.items() if k not in FACTORS))
            cells.append(Cell(*(values[n] for n in FACTORS), settings=settings))
        return cells

    def for_cell(self, cell: Cell) -> Grid:
        """This grid with `cell`'s setting levels applied (its lr, model, augment, ...):
        what the cell's training run uses. ValueError when they do not fit together."""
        if not cell.settings:
            return self
        return self.model_copy(update=_applied(self, dict(cell.settings)))

    def trials(self) -> list[Trial]:
        return [Trial(cell, seed) for cell in self.cells() for seed in self.seeds]

    def resolved_yaml(self) -> str:
        dumped = self.model_dump(mode="json")
        if not self.nuisance:
            # note: no nuisance key unless given, so a study written before it resumes
            del dumped["nuisance"]
        return yaml.safe_dump(dumped, sort_keys=False)


@dataclass(frozen=True, order=True)
class Cell:
    image_size: int
    dataset_size: int
    epochs: int
    batch_size: int
    # the levels of the settings varied as factors: (dotted path, level), in path order
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def cell_id(self) -> str:
        return cell_id(self.factors())

    @property
    def steps(self) -> int:
        return steps_per_cell(self.epochs, self.dataset_size, self.batch_size)

    def factors(self) -> dict[str, Any]:
        """The four factors' levels, then the settings' by dotted path."""
        return {**{name: getattr(self, name) for name in FACTORS}, **dict(self.settings)}


@dataclass(frozen=True, order=True)
class Trial:
    cell: Cell
    seed: int

    @property
    def trial_id(self) -> str:
        return trial_id(self.cell.cell_id, self.seed)


def steps_per_cell(epochs: int, dataset_size: int, batch_size: int) -> int:
    # the last partial batch is kept
    return epochs * math.ceil(dataset_size / batch_size)


def effective_lr(grid: Grid, batch_size: int) -> float:
    if grid.train.lr_scaling == "none":
        return grid.train.lr
    base = grid.train.lr_base_batch or min(grid.factors.batch_size)
    return grid.train.lr * batch_size / base


def _applied(grid: Grid, levels: dict[str, Any]) -> dict[str, Any]:
    """The sections of `grid` with `levels` (dotted path -> level) applied, validated."""
    update: dict[str, Any] = {}
    for section, model in (("train", TrainConfig), ("model", ModelConfig)):
        mine = {p.split(".", 1)[1]: v for p, v in levels.items() if p.startswith(f"{section}.")}
        if mine:
            raw = {**getattr(grid, section).model_dump(mode="json"), **mine}
            update[section] = model.model_validate(raw)
    if "augment" in levels:
        update["augment"] = validate_augment(levels["augment"])
    return update


def _error_text(exc: ValueError) -> str:
    """One line for a ValueError: a ValidationError's first error as `_describe` puts it."""
    if isinstance(exc, ValidationError):
        return _describe(exc.errors()[0])
    return str(exc).removeprefix("Value error, ")


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model that the key at `loc` sits in."""
    model: type[BaseModel] = Grid
    for part in loc[:-1]:
        if not isinstance(part, str):
            continue
        annotation = model.model_fields[part].annotation
        if typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _key_text(part: Any) -> str:
    # note: a key holding a line break, other control characters or edge spaces is
    # quoted, so the message stays one line and shows the key exactly
    text = str(part)
    return text if text and text.isprintable() and text.strip() == text else repr(text)


def _dotted(parts: tuple[Any, ...]) -> str:
    """``claims[2].factor``: names joined by dots, list positions in brackets."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not str(part).startswith("function-after"):
            text += f".{_key_text(part)}" if text else _key_text(part)
    return text


def _shown(value: Any) -> str:
    """A value the way a message names it: as YAML spells a boolean or null, a number or
    text as written, anything else by its kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, float):
        return f"the float {value!r}"
    if isinstance(value, str):
        return f"the text {value!r:.40}"
    return {dict: "a mapping", list: "a list"}.get(type(value), f"a {type(value).__name__}")


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = _dotted(loc)
    if error["type"] == "int_type":
        return f"{key}: expected an integer, not {_shown(error['input'])}"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{_did_you_mean(str(loc[-1]), _fields_at(loc))}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    if error["type"] == "invalid_key" or loc[-1:] == ("[key]",):
        # note: the location holds such a key as text (or False as 0); name the key itself
        parents = loc[:-1] if error["type"] == "invalid_key" else loc[:-2]
        where = f"{_dotted(parents)}." if parents else ""
        value = error["input"]
        kind = "null" if value is None else type(value).__name__
        return f"{where}{_key_text(value)}: a key must be a string, not {kind}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not key or message.startswith(f"{key}."):
        return message
    if message.startswith(f"{loc[-1]}:"):
        message = message.split(":", 1)[1].strip()
    return f"{key}: {message}"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, strict: a key given twice in one mapping is a YAML error
    naming the key and both lines, not "the last one wins"; a scalar its constructors
    cannot read (2024-13-45, 0b_, !!int x, !!bool maybe, an empty !!int) is a YAML error
    with its line, not a bare ValueError, KeyError or IndexError."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._root: yaml.Node | None = None
        self._checked: set[int] = set()

    def construct_document(self, node: yaml.Node) -> Any:
        self._root = node
        return super().construct_document(node)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # note: checked before PyYAML merges `<<: *base` into the node (a key overriding a
        # merged one is no duplicate), and once per node, since merging rewrites it
        if id(node) not in self._checked:
            self._checked.add(id(node))
            self._refuse_duplicates(node)
        super().flatten_mapping(node)

    def _refuse_duplicates(self, node: yaml.MappingNode) -> None:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            # note: only a scalar key can be hashed; PyYAML refuses the others itself
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            # note: compared as read, so `yes` and `true` (both True) are one key
            key = self.construct_object(key_node)
            if key in seen:
                line = seen[key].start_mark.line + 1
                where = _dotted((*self._path_to(node), key_node.value))
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {where}, first on line {line}", key_node.start_mark
                )
            seen[key] = key_node

    def _path_to(self, target: yaml.Node) -> tuple[Any, ...]:
        """The keys and list positions from the document's top to `target`; none where
        only a complex key holds it. Each node is visited once, so aliases cost nothing."""
        todo: list[tuple[yaml.Node | None, tuple[Any, ...]]] = [(self._root, ())]
        visited: set[int] = set()
        while todo:
            node, parts = todo.pop()
            if node is target:
                return parts
            if id(node) in visited:
                continue
            visited.add(id(node))
            if isinstance(node, yaml.MappingNode):
                todo += [
                    (value, (*parts, key.value))
                    for key, value in node.value
                    if isinstance(key, yaml.ScalarNode)
                ]
            elif isinstance(node, yaml.SequenceNode):
                todo += [(value, (*parts, i)) for i, value in enumerate(node.value)]
        return ()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            tag = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r:.40} as {tag}", node.start_mark
            ) from exc


class RenamedKeyWarning(FutureWarning):
    """A grid file spells a key by its old name; it is read under the new one."""


def renamed_keys(raw: Any, source: str | None = "grid") -> Any:
    """`raw` with the old spellings of RENAMED_KEYS under their new names; a warning of
    one line for each when `source` names the file (None: silently, e.g. an old study's
    grid.yaml compared on a resume). Both spellings at once is an error."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    for (section, old), new in RENAMED_KEYS.items():
        block = raw.get(section)
        if not isinstance(block, dict) or old not in block:
            continue
        if new in block:
            raise GridError(f"{source}: {section}.{old}: give {section}.{new} only (its new name)")
        block = {(new if k == old else k): v for k, v in block.items()}
        raw[section] = block
        if source is not None:
            warnings.warn(
                f"{source}: {section}.{old} is now {section}.{new}; read as that",
                RenamedKeyWarning,
                stacklevel=2,
            )
    return raw


def parse_grid(raw: Any, source: str = "grid") -> Grid:
    if not isinstance(raw, dict):
        raise GridError(f"{source}: expected a mapping of keys, got {type(raw).__name__}")
    raw = renamed_keys(raw, source)
    try:
        return Grid.model_validate(raw)
    except ValidationError as exc:
        # note: a misspelt key also leaves the right one missing; name the misspelling
        first = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise GridError(f"{source}: {_describe(first)}") from None


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    try:
        # note: bytes, so a file in another encoding is a YAML error (PyYAML reads UTF-8,
        # and UTF-16 with a byte-order mark), not a UnicodeDecodeError
        content = path.read_bytes()
    except OSError as exc:
        raise GridError(f"{path}: cannot read grid file ({exc.strerror})") from None
    try:
        raw = yaml.load(content, Loader=_Loader)
    except yaml.reader.ReaderError as exc:
        # note: PyYAML gives a character it refuses as a code, with the encoding "unicode"
        what = (
            f"the character {chr(exc.character)!r} is not allowed"
            if exc.encoding == "unicode"
            else f"not {exc.encoding} text"
        )
        raise GridError(f"{path}: invalid YAML ({what}, at position {exc.position})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise GridError(f"{path}:{where} invalid YAML ({problem})") from None
    except RecursionError:
        raise GridError(f"{path}: invalid YAML (nested too deeply)") from None
    grid = parse_grid(raw, str(path))
    try:
        # note: the user's builder is looked for beside the grid file, as data is
        grid = grid.model_copy(update={"augment": with_folder(grid.augment, path.parent)})
    except ValueError as exc:
        raise GridError(f"{path}: {exc}") from None
    # note: relative data paths are relative to the grid file, so grids travel with data;
    # so are a model's weights and the folder a target is imported from
    return grid.model_copy(
        update={
            "data": grid.data.relative_to(path.parent),
            "model": grid.model.relative_to(path.parent),
        }
    )
