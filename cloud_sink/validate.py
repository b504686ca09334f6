"""Every MQTT message is checked against the protocol models before anything is stored.

A message that fails is not an error of the sink: it becomes a dead letter with the reason and
its raw bytes, so an operator can see what a broken vehicle (or anyone else on the broker) sent.
The good path parses the JSON once (pydantic's Rust parser); only a failure pays for the
diagnosis that names the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from sleepsafe.protocol import DEVICE_ID_PATTERN, MESSAGES, PROTOCOL_VERSIONS, RESERVED_DEVICE_IDS, TOPIC_ROOT

DEVICE_RE = re.compile(DEVICE_ID_PATTERN)
_PREFIX = TOPIC_ROOT + "/"


def _adapter(by_version: dict[int, type[BaseModel]]) -> TypeAdapter[Any]:
    """One parser per kind for every schema version: by the field ``v`` when the versions
    differ in shape (a tagged union: pydantic reads ``v`` first and parses once)."""
    models = list(dict.fromkeys(by_version.values()))
    if len(models) == 1:
        return TypeAdapter(models[0])
    union: Any = models[0]
    for m in models[1:]:
        union = union | m
    return TypeAdapter(Annotated[union, Field(discriminator="v")])


_ADAPTERS = {kind: _adapter(by_version) for kind, by_version in MESSAGES.items()}


@dataclass(frozen=True, slots=True)
class Valid:
    kind: str  # status | event | telemetry | stats
    device_id: str
    msg: BaseModel
    topic: str = ""
    raw: bytes = b""  # as received: kept as the dead letter if the database refuses the row


@dataclass(frozen=True, slots=True)
class Rejected:
    topic: str
    payload: bytes
    reason: str
    # A short class of the reason, for metrics: topic, oversized, json, version, invalid, device,
    # clock, store (the database refused the row), internal.
    code: str


def parse_topic(topic: str) -> tuple[str, str] | str:
    """``sleepsafe/v1/<device>/<kind>`` → (device, kind), or the reason it is not one."""
    if not topic.startswith(_PREFIX):
        return f"topic {topic[:80]!r} is not under {TOPIC_ROOT}/"
    parts = topic[len(_PREFIX) :].split("/")
    if len(parts) != 2:
        return f"topic {topic[:80]!r}: expected {TOPIC_ROOT}/<device>/<kind>"
    device, kind = parts
    if device in RESERVED_DEVICE_IDS:
        return f"device id {device!r} is reserved for the sink's own topics"
    if kind not in MESSAGES:
        return f"unknown message kind {kind[:40]!r} (known: {', '.join(MESSAGES)})"
    if not DEVICE_RE.match(device):
        return f"invalid device id {device[:80]!r} in topic"
    return device, kind


@dataclass(frozen=True, slots=True)
class ClockWindow:
    """Times a vehicle may report, around the sink's clock: older than ``past`` or further
    ahead than ``future`` is a vehicle with a bad clock (or a bit flip), whose rows would sort
    out of every view and whose year-1 dates the store cannot read back."""

    past: timedelta
    future: timedelta

    def check(self, msg: BaseModel, now: datetime | None = None) -> str | None:
        now = now or datetime.now(timezone.utc)
        fields = msg.__dict__  # not getattr(): a missing field costs pydantic an exception
        for name in ("time", "start_time", "raised_time", "end_time"):
            t = fields.get(name)
            if not isinstance(t, datetime):
                continue
            aware = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
            try:
                skew = aware - now
            except OverflowError:  # pragma: no cover - both ends are within datetime's range
                return f"{name} {t.isoformat()[:40]} cannot be compared with the sink's clock"
            if skew < -self.past or skew > self.future:
                ahead = "ahead of" if skew > timedelta(0) else "behind"
                return (
                    f"clock: {name} {aware.isoformat()[:32]} is {_span(abs(skew))} {ahead} the sink's "
                    f"clock (accepted: {_span(self.past)} behind to {_span(self.future)} ahead)"
                )
        return None


def _span(d: timedelta) -> str:
    s = d.total_seconds()
    if s >= 2 * 86400:
        return f"{s / 86400:.0f} days"
    if s >= 2 * 3600:
        return f"{s / 3600:.0f} h"
    return f"{s:.0f} s"


def _why(kind: str, payload: bytes, err: ValidationError) -> tuple[str, str]:
    try:
        obj = json.loads(payload)
    except UnicodeDecodeError:
        return "json", "payload is not UTF-8"
    except RecursionError:
        return "json", "bad JSON: nested too deeply"
    except ValueError as bad:
        return "json", f"bad JSON: {bad}"
    if not isinstance(obj, dict):
        return "json", f"payload is a JSON {type(obj).__name__}, not an object"
    if "v" not in obj:
        return "version", "no schema version (field v)"
    if obj["v"] not in PROTOCOL_VERSIONS or isinstance(obj["v"], bool):
        known = ", ".join(f"v{v}" for v in PROTOCOL_VERSIONS)
        return "version", f"unknown schema version {repr(obj['v'])[:20]} (this sink reads {known})"
    parts = []
    for e in err.errors()[:3]:
        path = list(e["loc"])
        if path and len(MESSAGES[kind]) > 1 and str(path[0]) == str(obj["v"]):
            path = path[1:]  # the union's tag: the version, already checked
        loc = ".".join(str(x) for x in path) or "(root)"
        parts.append(f"{loc}: {_message(e)}")
    more = f" (+{err.error_count() - 3} more)" if err.error_count() > 3 else ""
    return "invalid", f"invalid {kind}: {'; '.join(parts)}{more}"


def _message(e: Any) -> str:
    if e["type"] == "extra_forbidden":
        return "unknown field"
    if e["type"] == "string_pattern_mismatch" and "x00" in e["msg"]:
        return "NUL character in text"
    return str(e["msg"])


def validate(
    topic: str, payload: bytes, max_bytes: int, clock: ClockWindow | None = None
) -> Valid | Rejected:
    """The message as a :class:`Valid` or a :class:`Rejected` with the reason; never raises,
    whatever the bytes: one message must not stop ingest for the whole fleet."""
    try:
        return _validate(topic, payload, max_bytes, clock)
    except Exception as err:  # noqa: BLE001 - any failure here is this message's, not the sink's
        return Rejected(
            topic, payload, f"could not be checked: {type(err).__name__}: {str(err)[:200]}", "internal"
        )


def _validate(topic: str, payload: bytes, max_bytes: int, clock: ClockWindow | None) -> Valid | Rejected:
    where = parse_topic(topic)
    if isinstance(where, str):
        return Rejected(topic, payload, where, "topic")
    device, kind = where
    if len(payload) > max_bytes:
        return Rejected(topic, payload, f"oversized payload: {len(payload)} bytes > {max_bytes}", "oversized")
    try:
        msg = _ADAPTERS[kind].validate_json(payload)
    except ValidationError as err:
        code, reason = _why(kind, payload, err)
        return Rejected(topic, payload, reason, code)
    if "v" not in msg.model_fields_set:  # the model has a default; the wire must say it
        return Rejected(topic, payload, "no schema version (field v)", "version")
    claimed = getattr(msg, "device_id", device)
    if claimed != device:
        return Rejected(
            topic,
            payload,
            f"device id {claimed[:80]!r} in the payload differs from {device!r} in the topic",
            "device",
        )
    if clock is not None:
        bad_time = clock.check(msg)
        if bad_time:
            return Rejected(topic, payload, bad_time, "clock")
    return Valid(kind, device, msg, topic, payload)
