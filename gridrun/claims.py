"""Claims about the factors, written before the results are in: the grid file's ``claims:``
and the rules of thumb of the article gridrun answers. Pure: pydantic, no Ray, no torch.

A claim names one factor and one of three kinds::

    claims:
      - {name: "512 px or more is better", factor: image_size, kind: better, levels: ">= 512"}
      - {name: "around 60-70 epochs", factor: epochs, kind: best_in, range: [60, 70]}
      - {name: "more data, fewer epochs", factor: dataset_size, kind: trend,
         response: best_epoch, direction: decreases}

``better``: the ``levels`` (a list of levels, or a comparison such as ``">= 512"``) score a
better metric than the factor's other levels. ``best_in``: the best level lies in
``range`` (inclusive), i.e. it beats levels below and above it. ``trend``: from the
factor's smallest to its largest level the ``response`` (the metric, ``best_epoch``,
``train_val_gap``, ``train_time_s`` or ``steps``) ``increases`` or ``decreases``.
``analysis.claims`` judges them; this module only says what a claim is.

A claim may name a setting varied as a factor by its dotted path (``train.lr``,
``model.encoder``, ``augment``), with levels as that factor's (numbers or text); the grid
checks that it declares the factor.
"""

from __future__ import annotations

import difflib
import operator
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)

from gridrun.layout import FACTORS

__all__ = ["KINDS", "RESPONSES", "RULES_OF_THUMB", "Claim", "Claims", "parse_claims"]

KINDS = ("better", "best_in", "trend")
# what a trend claim is about: the report's metric at the trial's epoch, the epoch at
# which a training run is best, training minus validation metric at the trial's epoch,
# the training time and the optimizer steps of a trial
RESPONSES = ("metric", "best_epoch", "train_val_gap", "train_time_s", "steps")

_COMPARISON = re.compile(r"^\s*(>=|<=|>|<|==)?\s*(\d+)\s*$")
_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_ONLY_FOR = {"levels": "better", "range": "best_in", "response": "trend", "direction": "trend"}
_NEEDED = {"better": ("levels",), "best_in": ("range",), "trend": ("direction",)}
# note: strict, like every integer of the grid file: levels [512, true] is refused, not [1, 512]
_Level = Annotated[StrictInt, Field(gt=0)]
# a setting factor's level (train.lr: 3e-4, model.encoder: resnet18); never a boolean
_SettingLevel = Annotated[StrictFloat | StrictInt | str, Field(union_mode="left_to_right")]


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Claim(BaseModel):
    """One claim about one factor; see the module's docstring for the kinds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    factor: str
    kind: Literal["better", "best_in", "trend"]
    levels: list[_Level] | list[_SettingLevel] | str | None = Field(None, validate_default=True)
    range: tuple[_Level, _Level] | tuple[float, float] | None = Field(
        None, validate_default=True
    )
    response: Literal["metric", "best_epoch", "train_val_gap", "train_time_s", "steps"] | None = (
        Field(None, validate_default=True)
    )
    direction: Literal["increases", "decreases"] | None = Field(None, validate_default=True)

    @field_validator("factor")
    @classmethod
    def _known_factor(cls, factor: str) -> str:
        if factor not in FACTORS and not _is_setting(factor):
            raise ValueError(
                f"unknown factor {factor!r}{_did_you_mean(factor, FACTORS)}; "
                f"one of {', '.join(FACTORS)}"
            )
        return factor

    @field_validator("levels", "range", "response", "direction")
    @classmethod
    def _key_of_kind(cls, value: Any, info: ValidationInfo) -> Any:
        # note: checked per key, so the error names the key itself (claims[2].range)
        kind, key = info.data.get("kind"), info.field_name
        if kind is None:
            return value
        core = info.data.get("factor") in FACTORS
        if core and isinstance(value, list | tuple) and not all(map(_is_level, value)):
            raise ValueError(f"levels of {info.data['factor']} are positive integers")
        if value is not None and _ONLY_FOR[key] != kind:
            raise ValueError(f"only for kind {_ONLY_FOR[key]!r}, not {kind!r}")
        if value is None and key in _NEEDED[kind]:
            raise ValueError(f"required for kind {kind!r}")
        if key == "levels" and isinstance(value, str) and not _COMPARISON.match(value):
            raise ValueError(
                f"{value!r} is neither a list of levels nor a comparison such as '>= 512'"
            )
        if key == "levels" and isinstance(value, list) and not value:
            raise ValueError("needs at least one level")
        if key == "range" and value is not None and value[0] > value[1]:
            raise ValueError(f"the low end {value[0]:g} is above the high end {value[1]:g}")
        return value

    @property
    def title(self) -> str:
        """The claim's name, or a description of it when the grid file gave none."""
        return self.name or self.describe()

    def describe(self) -> str:
        if self.kind == "better":
            return f"{self.factor} {self.levels_text()} is better"
        if self.kind == "best_in":
            return f"the best {self.factor} is {self.range_text()}"
        return f"{self.response_name} {self.direction} with {self.factor}"

    @property
    def response_name(self) -> str:
        return self.response or "metric"

    def claimed(self, level: float) -> bool:
        """Whether ``level`` is one of the levels a ``better`` claim names."""
        if isinstance(self.levels, list):
            return level in self.levels
        match = _COMPARISON.match(self.levels or "")
        if match is None:
            return False
        op, value = match.group(1) or "==", int(match.group(2))
        return _OPERATORS.get(op, operator.eq)(level, value)

    def levels_text(self) -> str:
        """``≥ 512``, ``512 or 1024``: the claimed levels in words."""
        if isinstance(self.levels, list):
            return " or ".join(v if isinstance(v, str) else f"{v:g}" for v in self.levels)
        match = _COMPARISON.match(self.levels or "")
        if match is None:
            return str(self.levels)
        op = {">=": "≥ ", "<=": "≤ ", ">": "> ", "<": "< "}.get(match.group(1) or "", "")
        return f"{op}{int(match.group(2))}"

    def range_text(self) -> str:
        lo, hi = self.range or (0.0, 0.0)
        return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


def _is_setting(factor: str) -> bool:
    # note: which settings a grid may vary is spec's to say; it checks the factor is declared
    return "." in factor or factor == "augment"


def _is_level(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _unique_titles(claims: list[Claim]) -> list[Claim]:
    seen: dict[str, int] = {}
    for i, claim in enumerate(claims):
        if claim.title in seen:
            raise ValueError(
                f"two claims named {claim.title!r} (claims[{seen[claim.title]}] and "
                f"claims[{i}]); give each its own name"
            )
        seen[claim.title] = i
    return claims


Claims = Annotated[list[Claim], AfterValidator(_unique_titles)]
_CLAIMS = TypeAdapter(Claims)


def parse_claims(raw: Any) -> list[Claim]:
    """The claims of a grid file's ``claims:`` value; raises pydantic's ValidationError."""
    return _CLAIMS.validate_python(raw or [])


RULES_OF_THUMB: tuple[Claim, ...] = (
    Claim(name="512 or 1024 px is better", factor="image_size", kind="better", levels=">= 512"),
    Claim(name="around 60–70 epochs", factor="epochs", kind="best_in", range=(60, 70)),
    Claim(name="a batch size of 4 is optimal", factor="batch_size", kind="best_in", range=(4, 4)),
    Claim(
        name="with a large data set you need fewer epochs",
        factor="dataset_size",
        kind="trend",
        response="best_epoch",
        direction="decreases",
    ),
    Claim(
        name="a bigger data set prevents overfitting",
        factor="dataset_size",
        kind="trend",
        response="train_val_gap",
        direction="decreases",
    ),
    Claim(
        name="larger batches train faster",
        factor="batch_size",
        kind="trend",
        response="train_time_s",
        direction="decreases",
    ),
)
