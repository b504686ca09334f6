"""What a person may say of an alert, for the learning loop: it was real, it was a false alarm,
or it cannot be told from what was recorded."""

from __future__ import annotations

from typing import Literal, get_args

EventLabel = Literal["confirmed", "false_alarm", "unsure"]
EVENT_LABELS: tuple[str, ...] = get_args(EventLabel)
