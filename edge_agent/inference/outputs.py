"""What the learned models said of one frame, each output in its own typed field.

``None`` means the model did not run on this frame (disabled, refused, or no face), which is
not the same as any probability: the policy falls back to EAR alone for that decision.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelOutputs:
    eye_closed: float | None = None  # eye-state CNN: P(eyes closed), both eyes averaged
    temporal_closed: float | None = None  # temporal GRU: P(eyes closed in this frame)
    drowsy_score: float | None = None  # temporal GRU: drowsiness score, 0-1

    @property
    def closed(self) -> float | None:
        """The closure probability the policy fuses with EAR: the temporal model's when it
        runs (it has seen the frames before, and the eye-state output as one of its inputs),
        else the eye-state model's."""
        return self.temporal_closed if self.temporal_closed is not None else self.eye_closed


NO_MODELS = ModelOutputs()
