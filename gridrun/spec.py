"""The grid file: parse, validate, expand to cells and trials. Pure: no Ray, no torch."""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "FACTORS",
    "Cell",
    "Grid",
    "GridError",
    "Trial",
    "cell_id",
    "effective_lr",
    "load_grid",
    "parse_grid",
    "steps_per_cell",
]

FACTORS = ("image_size", "dataset_size", "epochs", "batch_size")


class GridError(ValueError):
    """A problem the user can fix in the grid file; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    source: Literal["synthetic", "folder"] = "synthetic"
    path: Path | None = None
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    val_size: PositiveInt | None = None
    num_classes: PositiveInt = 1
    # note: every cell is scored at this one resolution; default = largest image_size
    eval_size: PositiveInt | None = None
    # seeds the train/validation split and, for synthetic data, the scenes themselves
    split_seed: int = 0
    # synthetic only: how many scenes exist; default = exactly what the grid needs
    num_images: PositiveInt | None = None

    @model_validator(mode="after")
    def _folder_needs_path(self) -> DataConfig:
        if self.source == "folder" and self.path is None:
            raise ValueError("path: required when source is 'folder'")
        return self


class ModelConfig(_Strict):
    name: str = "unet"
    base_channels: PositiveInt = 16
    depth: Annotated[int, Field(ge=1, le=7)] = 4

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from gridrun.models import MODEL_NAMES

        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model {name!r}{_did_you_mean(name, MODEL_NAMES)}")
        return name


class TrainConfig(_Strict):
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3
    lr_scaling: Literal["none", "linear"] = "none"
    # linear scaling: lr × batch_size / lr_base_batch (Goyal et al.); default = smallest batch
    lr_base_batch: PositiveInt | None = None
    loss: Literal["bce_dice", "bce", "dice", "ce", "ce_dice"] = "bce_dice"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9


class Factors(_Strict):
    image_size: list[int]
    dataset_size: list[int]
    epochs: list[int]
    batch_size: list[int]

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
        # note: kept sorted, so a file listing levels in another order is the same grid
        return sorted(levels)


class Resources(_Strict):
    workers_per_trial: PositiveInt = 1
    use_gpu: Literal["auto"] | bool = "auto"
    cpus_per_worker: PositiveFloat = 1
    gpus_per_worker: PositiveFloat = 1
    # extra custom Ray resources each worker needs, e.g. {"fake_gpu": 1}
    custom: dict[str, PositiveFloat] = Field(default_factory=dict)
    max_concurrent_trials: Literal["auto"] | PositiveInt = "auto"


class Grid(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "grid"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    factors: Factors
    seeds: list[int] = [0]
    resources: Resources = Resources()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"duplicated seed(s) in {seeds}")
        return sorted(seeds)

    @model_validator(mode="after")
    def _consistent(self) -> Grid:
        f = self.factors
        if max(f.batch_size) > min(f.dataset_size):
            raise ValueError(
                f"factors.batch_size: batch {max(f.batch_size)} is larger than "
                f"dataset_size {min(f.dataset_size)}"
            )
        workers = self.resources.workers_per_trial
        if workers > min(f.batch_size):
            raise ValueError(
                f"resources.workers_per_trial: {workers} workers cannot share "
                f"a batch of {min(f.batch_size)}"
            )
        if self.train.loss in ("bce", "bce_dice") and self.data.num_classes > 1:
            raise ValueError(
                f"train.loss: {self.train.loss!r} is for binary masks; use 'ce' or 'ce_dice' "
                f"with num_classes {self.data.num_classes}"
            )
        if self.train.loss in ("ce", "ce_dice") and self.data.num_classes == 1:
            raise ValueError(f"train.loss: {self.train.loss!r} needs data.num_classes > 1")
        return self

    @property
    def eval_size(self) -> int:
        return self.data.eval_size or max(self.factors.image_size)

    def cells(self) -> list[Cell]:
        f = self.factors
        combos = itertools.product(f.image_size, f.dataset_size, f.epochs, f.batch_size)
        return [Cell(*combo) for combo in combos]

    def trials(self) -> list[Trial]:
        return [Trial(cell, seed) for cell in self.cells() for seed in self.seeds]

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


@dataclass(frozen=True, order=True)
class Cell:
    image_size: int
    dataset_size: int
    epochs: int
    batch_size: int

    @property
    def cell_id(self) -> str:
        return cell_id(self.factors())

    @property
    def steps(self) -> int:
        return steps_per_cell(self.epochs, self.dataset_size, self.batch_size)

    def factors(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FACTORS}


@dataclass(frozen=True, order=True)
class Trial:
    cell: Cell
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.cell.cell_id}_s{self.seed}"


def cell_id(factors: dict[str, int]) -> str:
    """A readable id made from the factor values alone, so the same cell gets the
    same id whatever the order of keys or levels in the file, on any machine."""
    f = factors
    return f"img{f['image_size']}_n{f['dataset_size']}_ep{f['epochs']}_bs{f['batch_size']}"


def steps_per_cell(epochs: int, dataset_size: int, batch_size: int) -> int:
    # the last partial batch is kept
    return epochs * math.ceil(dataset_size / batch_size)


def effective_lr(grid: Grid, batch_size: int) -> float:
    if grid.train.lr_scaling == "none":
        return grid.train.lr
    base = grid.train.lr_base_batch or min(grid.factors.batch_size)
    return grid.train.lr * batch_size / base


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
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc if not str(p).startswith("function-after"))
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{_did_you_mean(str(loc[-1]), _fields_at(loc))}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not key:
        return message
    if message.startswith(f"{loc[-1]}:"):
        message = message.split(":", 1)[1].strip()
    return f"{key}: {message}"


def parse_grid(raw: Any, source: str = "grid") -> Grid:
    if not isinstance(raw, dict):
        raise GridError(f"{source}: expected a mapping of keys, got {type(raw).__name__}")
    try:
        return Grid.model_validate(raw)
    except ValidationError as exc:
        # note: a misspelt key also leaves the right one missing; name the misspelling
        first = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise GridError(f"{source}: {_describe(first)}") from None


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GridError(f"{path}: cannot read grid file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise GridError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    grid = parse_grid(raw, str(path))
    if grid.data.path is not None and not grid.data.path.is_absolute():
        # note: relative data paths are relative to the grid file, so grids travel with data
        resolved = (path.parent / grid.data.path).resolve()
        grid = grid.model_copy(update={"data": grid.data.model_copy(update={"path": resolved})})
    return grid
