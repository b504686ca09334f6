"""What a person may say of an alert, for the learning loop: it was real, it was a false alarm,
or it cannot be told from what was recorded."""

from __future__ import annotations

from typing import Literal, get_args

EventLabel = Literal["confirmed", "false_alarm", "unsure"]
EVENT_LABELS: tuple[str, ...] = get_args(EventLabel)
# Who gives a label: a name or an e-mail, as stored (64 characters).
LABELLER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@ -]{0,63}$"
