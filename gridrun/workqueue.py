"""The driver's queue of training runs. Pure: no Ray, no torch (`tune.py` makes it a
named Ray actor per invocation).

Work units pull their next run when they finish one, longest first, so a unit that
finishes early takes more work. A claim is keyed by (unit, attempt, position): every rank
of a unit, and a worker group Ray Train restarts, asks for position 0, 1, ... and gets
the same runs back. As runs finish, the measured seconds per pixel × sample × epoch
rescale the estimates of the runs not yet started, which are then taken longest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gridrun.runs import RunPlan, estimate_seconds, share_groups

__all__ = ["QUEUE_NAMESPACE", "RunQueue"]

# the named run queue of each invocation lives in this Ray namespace
QUEUE_NAMESPACE = "gridrun"


def _work(plan: RunPlan, epochs: int) -> float:
    return plan.image_size**2 * plan.dataset_size * epochs


@dataclass
class _Measured:
    seconds: float = 0.0
    work: float = 0.0  # pixels × samples × epochs trained in those seconds


class RunQueue:
    """Training runs waiting for a work unit, the claims of the units, and what the
    finished runs measured."""

    def __init__(
        self,
        plans: Sequence[RunPlan],
        use_gpu: bool,
        workers: int = 1,
        share_gpus: bool = False,
    ):
        self._plans = {p.training_run: p for p in plans}
        self._nominal = {p.training_run: estimate_seconds(p, use_gpu, workers) for p in plans}
        self._share = {
            p.training_run: share
            for share, some in share_groups(list(plans), use_gpu, workers, share_gpus).items()
            for p in some
        }
        self._pending = set(self._plans)
        self._claims: dict[tuple[str, int, int], str] = {}
        self._log: list[str] = []  # every new claim, in order
        self._done: set[str] = set()
        self._by_size: dict[int, _Measured] = {}
        self._all = _Measured()
        self._nominal_done = 0.0  # the nominal estimate of the work measured in _all

    def estimate(self, training_run: str) -> float:
        """Seconds the run should take: measured on its image size when a run of that
        size finished, else the nominal estimate rescaled by what all finished runs
        measured against theirs, else nominal."""
        plan = self._plans[training_run]
        size = self._by_size.get(plan.image_size)
        if size is not None and size.work > 0:
            return _work(plan, plan.epochs) * size.seconds / size.work
        if self._nominal_done > 0:
            return self._nominal[training_run] * self._all.seconds / self._nominal_done
        return self._nominal[training_run]

    def claim(self, unit: str, attempt: int, position: int, share: float) -> RunPlan | None:
        """The run at `position` of (unit, attempt): the same for every rank and for a
        restarted worker group; for a new position, the longest waiting run of `share`.
        None when none is left."""
        key = (unit, attempt, position)
        if key not in self._claims:
            waiting = [r for r in self._pending if self._share[r] == share]
            if not waiting:
                return None
            run = max(waiting, key=lambda r: (self.estimate(r), r))
            self._pending.remove(run)
            self._claims[key] = run
            self._log.append(run)
        return self._plans[self._claims[key]]

    def finish(self, training_run: str, seconds: float = 0.0, epochs: int = 0) -> None:
        """The run ended (trained, diverged, failed); `seconds` measured over `epochs`
        epochs trained by the unit that finished it refine the other runs' estimates."""
        self._done.add(training_run)
        self._pending.discard(training_run)
        if epochs <= 0 or seconds <= 0:
            return
        plan = self._plans[training_run]
        work = _work(plan, epochs)
        size = self._by_size.setdefault(plan.image_size, _Measured())
        size.seconds += seconds
        size.work += work
        self._all.seconds += seconds
        self._all.work += work
        self._nominal_done += self._nominal[training_run] * epochs / plan.epochs

    def claims(self, since: int = 0) -> list[str]:
        """The runs claimed anew since the first `since` claims (a run taken again
        after a release counts again): the driver marks their trials started."""
        return self._log[since:]

    def claimed(self, unit: str) -> list[str]:
        """Every run `unit` claimed, in any attempt, in the order claimed."""
        return [r for (u, *_), r in sorted(self._claims.items()) if u == unit]

    def unfinished(self, unit: str) -> list[str]:
        """The runs `unit` claimed that have not ended."""
        return [r for r in self.claimed(unit) if r not in self._done]

    def release(self, unit: str) -> list[str]:
        """A lost unit: the runs it claimed but did not finish go back on the queue
        (a unit that takes one resumes it from its latest checkpoint)."""
        back = self.unfinished(unit)
        self._claims = {k: r for k, r in self._claims.items() if r not in back}
        self._pending.update(back)
        return back

    def pending(self) -> list[str]:
        """The runs no unit holds, longest first."""
        return sorted(self._pending, key=lambda r: (-self.estimate(r), r))
