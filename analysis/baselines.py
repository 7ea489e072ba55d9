"""What trivial predictors score: the floor a trained model must clear.

``baselines.json`` (written by the runner once per study) holds the validation set's
size and class pixel counts and, per trivial predictor (``all background``, ``all
foreground``; ``all class k`` for multi-class data), every metric as the curves name it
(``val_iou``, ``val_miou``, ``test_iou``, ...). A model whose metric sits at one of these
scores has learned nothing the class frequencies do not give: it has *collapsed*, and a
flat curve there is not a plateau.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from analysis.stats import higher_is_better

__all__ = ["Baselines", "SplitFacts"]


@dataclass(frozen=True)
class SplitFacts:
    """One evaluation split: its images and the pixels of each label (ignored ones apart)."""

    images: int
    class_pixels: tuple[int, ...]
    ignored_pixels: int = 0

    @property
    def class_shares(self) -> tuple[float, ...]:
        total = sum(self.class_pixels)
        return tuple(p / total for p in self.class_pixels) if total else ()


@dataclass(frozen=True)
class Baselines:
    """The scores of the trivial predictors, by predictor name and metric column."""

    eval_size: int | None
    splits: dict[str, SplitFacts]
    predictors: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Baselines:
        splits = {
            name: SplitFacts(
                int(s["images"]),
                tuple(int(p) for p in s.get("class_pixels", ())),
                int(s.get("ignored_pixels") or 0),
            )
            for name, s in (raw.get("splits") or {}).items()
        }
        predictors = {
            name: {k: float("nan") if v is None else float(v) for k, v in scores.items()}
            for name, scores in (raw.get("predictors") or {}).items()
        }
        size = raw.get("eval_size")
        return cls(None if size is None else int(size), splits, predictors)

    @classmethod
    def from_json(cls, data: bytes | str) -> Baselines:
        return cls.from_dict(json.loads(data))

    def scores(self, metric: str) -> dict[str, float]:
        """Predictor name → its finite score on ``metric``; empty for an unknown metric."""
        out = {}
        for name, values in self.predictors.items():
            v = values.get(metric)
            if v is not None and math.isfinite(v):
                out[name] = v
        return out

    def best(self, metric: str) -> tuple[str, float] | None:
        """The trivial predictor that scores best on ``metric`` and its score."""
        scores = self.scores(metric)
        if not scores:
            return None
        pick = max if higher_is_better(metric) else min
        name = pick(scores, key=scores.__getitem__)
        return name, scores[name]
