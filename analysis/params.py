"""Every threshold the analysis uses, in one object that feeds both the tables and the prose.

A table computed with ``Params(min_delta=0.01)`` and the report sentence describing it
read the same value, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PARAMS", "Params"]


@dataclass(frozen=True)
class Params:
    """Thresholds of the plateau and overfitting rules, the intervals and the recommendations.

    Plateau (validation metric): ``min_delta`` is the smallest gain that counts,
    ``patience`` the epochs it must be absent for, ``window`` the centred median that
    takes out epoch-to-epoch noise. Overfitting: ``gl_alpha`` is Prechelt's
    generalization-loss threshold in percent, ``progress_k`` the strip length of the
    training progress. Intervals: ``level`` of a Student t interval over seeds on the
    metric's scale (logit for [0, 1], log for [0, ∞)); groups with fewer than
    ``min_seeds`` seeds get none; ω² intervals refit the ANOVA ``n_boot_anova`` times,
    drawing from an RNG seeded with ``rng_seed``. Recommendations: a cell qualifies
    when its mean is within ``margin`` of the best cell's and a one-sided Welch test
    over seeds does not find it worse at level ``alpha``. Collapse: a trial whose
    metric is within ``collapse_margin`` of a trivial predictor's score (all
    background, all foreground, all of one class), or below the best of them, is
    *collapsed*. An overfitting onset needs ``onset_confirm`` later
    epochs of the training run to be *confirmed*. The smallest detectable difference is
    read at ``power`` and two-sided level ``alpha``; a significant term is named in the
    findings when its ω² is at least ``min_omega_sq``; the factor-importance plot colours
    a term significant when its p-value is below ``alpha``. Data scaling: the size past
    which a doubling gains less than ``scaling_gain`` (error, metric units) is reported,
    and a fit whose R² is below ``min_r2`` is read with care. Steps to a target (McCandlish et
    al. 2018): the target lies ``target_fraction`` of the way from the best trivial score
    to the weakest batch size's best mean; the critical batch size's interval resamples
    seeds ``n_boot_bcrit`` times.
    """

    min_delta: float = 0.005
    patience: int = 5
    window: int = 5
    gl_alpha: float = 5.0
    progress_k: int = 5
    level: float = 0.95
    n_boot_anova: int = 500
    rng_seed: int = 0
    min_seeds: int = 3
    margin: float = 0.01
    alpha: float = 0.05
    collapse_margin: float = 0.01
    onset_confirm: int = 3
    power: float = 0.8
    min_omega_sq: float = 0.01
    target_fraction: float = 0.8
    n_boot_bcrit: int = 2000
    notable_gap: float = 0.05
    scaling_gain: float = 0.01
    min_r2: float = 0.8

    def plateau_rule(self, metric: str) -> str:
        return (
            f"Plateau: the first epoch from which {metric} (centred "
            f"{self.window}-epoch median) gains at most {self.min_delta:g} over the next "
            f"{self.patience} epochs and never more than {self.patience * self.min_delta:g} "
            f"({self.patience} × {self.min_delta:g}) later, with at least {self.patience} "
            "epochs after it; a curve without such an epoch has none. It is found on the "
            "training run's whole recorded curve, so a cell read off a longer run plateaus "
            "by its epoch only if the run does; an epoch at a trivial predictor's score "
            "(collapsed) cannot start a plateau."
        )

    def collapse_rule(self, metric: str) -> str:
        if "loss" in metric:
            return (
                f"Collapse is not checked on {metric}: a loss has no trivial-predictor "
                "score, so no trial is flagged."
            )
        return (
            f"Collapse: a trial is collapsed when its final {metric} is within "
            f"{self.collapse_margin:g} of a trivial predictor's score (every pixel "
            "background, every pixel foreground, every pixel one class) or below the best "
            f"of them: {metric} ≤ best trivial score + {self.collapse_margin:g}."
        )

    def onset_rule(self) -> str:
        return (
            f"Overfitting onset: the first epoch after the validation loss's lowest point at "
            f"which it is more than {self.gl_alpha:g}% above that minimum (Prechelt's "
            f"GL > {self.gl_alpha:g}) while the training loss is below its value there; "
            "rises that later return below the minimum they rose from are transient, "
            "ignored and counted in transient_rises. The onset is found on the training "
            "run's whole recorded curve; it is unconfirmed (reported apart, not as an "
            f"onset) when the run has fewer than {self.onset_confirm} epochs after it or "
            f"the median GL over those epochs is at most {self.gl_alpha:g}."
        )

    def interval_rule(self) -> str:
        return (
            f"Intervals: {self.level:.0%} Student t intervals of the mean over seeds, on "
            "the logit scale for scores in [0, 1] (seed values clipped to [0.001, 0.999]) "
            "and on the log scale for losses and times, transformed back, so they stay "
            "inside the metric's range and are as wide as the seeds warrant; the point is "
            f"the seeds' mean. With fewer than {self.min_seeds} seeds no interval is drawn "
            "and the seeds are shown as points."
        )

    def claims_rule(self) -> str:
        return (
            "Each rule of thumb (and each claim of the grid file's claims:) is judged on "
            "per-seed means over the other factors, by a one-sided paired t-test over seeds "
            f"at {self.alpha:g}: supported, contradicted (significantly the other way, or an "
            f"advantage whose interval stays below {self.margin:g}), inconclusive, or not "
            "testable when the grid's levels cannot answer it (the row says which levels "
            f"would). Differences carry a two-sided {1 - 2 * self.alpha:.0%} interval."
        )

    def recommendation_rule(self, metric: str) -> str:
        return (
            f"Recommendation: per image size, the cheapest cell whose mean {metric} is within "
            f"{self.margin:g} of the best cell's and which a one-sided Welch t-test over seeds "
            f"does not find worse (p ≥ {self.alpha:g}); by steps, only a cell that takes no "
            "more train time than the best cell (where both are measured), else the best cell "
            "itself. Cells with a collapsed seed are never recommended."
        )


DEFAULT_PARAMS = Params()
