"""Shadow mode: the models' closure verdict beside EAR's, never deciding anything.

Where the two disagree about shut eyes for ``disagree_s`` or longer, the stretch becomes a
``disagreement`` record: the frames where one of them is wrong, which a person's label turns
into the training data the models lack."""

from __future__ import annotations


class Disagreement:
    def __init__(self, min_s: float) -> None:
        self.min_s = min_s
        self._start: tuple[float, int] | None = None

    def cancel(self) -> None:
        self._start = None

    def step(self, t: float, frame: int, ear_shut: bool, model_shut: bool) -> tuple[float, int] | None:
        """The start (t, frame) of a disagreement of at least ``min_s`` that ended in this
        frame, if one did."""
        if ear_shut != model_shut:
            if self._start is None:
                self._start = (t, frame)
            return None
        start, self._start = self._start, None
        if start is not None and t - start[0] >= self.min_s:
            return start
        return None
