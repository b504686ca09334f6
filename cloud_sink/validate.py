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

from pydantic import BaseModel, ValidationError

from edge_agent.protocol import MESSAGES, PROTOCOL_VERSION, TOPIC_ROOT

DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PREFIX = TOPIC_ROOT + "/"


@dataclass(frozen=True, slots=True)
class Valid:
    kind: str  # status | event | telemetry | stats
    device_id: str
    msg: BaseModel


@dataclass(frozen=True, slots=True)
class Rejected:
    topic: str
    payload: bytes
    reason: str
    code: str  # a short class of the reason, for metrics: topic, oversized, json, version, invalid, device


def parse_topic(topic: str) -> tuple[str, str] | str:
    """``sleepsafe/v1/<device>/<kind>`` → (device, kind), or the reason it is not one."""
    if not topic.startswith(_PREFIX):
        return f"topic {topic[:80]!r} is not under {TOPIC_ROOT}/"
    parts = topic[len(_PREFIX) :].split("/")
    if len(parts) != 2:
        return f"topic {topic[:80]!r}: expected {TOPIC_ROOT}/<device>/<kind>"
    device, kind = parts
    if kind not in MESSAGES:
        return f"unknown message kind {kind[:40]!r} (known: {', '.join(MESSAGES)})"
    if not DEVICE_RE.match(device):
        return f"invalid device id {device[:80]!r} in topic"
    return device, kind


def _why(kind: str, payload: bytes, err: ValidationError) -> tuple[str, str]:
    try:
        obj = json.loads(payload)
    except UnicodeDecodeError:
        return "json", "payload is not UTF-8"
    except ValueError as bad:
        return "json", f"bad JSON: {bad}"
    if not isinstance(obj, dict):
        return "json", f"payload is a JSON {type(obj).__name__}, not an object"
    if "v" not in obj:
        return "version", "no schema version (field v)"
    if obj["v"] != PROTOCOL_VERSION:
        return (
            "version",
            f"unknown schema version {repr(obj['v'])[:20]} (this sink reads v{PROTOCOL_VERSION})",
        )
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"]) or "(root)"
        parts.append(f"{loc}: {'unknown field' if e['type'] == 'extra_forbidden' else e['msg']}")
    more = f" (+{err.error_count() - 3} more)" if err.error_count() > 3 else ""
    return "invalid", f"invalid {kind}: {'; '.join(parts)}{more}"


def validate(topic: str, payload: bytes, max_bytes: int) -> Valid | Rejected:
    where = parse_topic(topic)
    if isinstance(where, str):
        return Rejected(topic, payload, where, "topic")
    device, kind = where
    if len(payload) > max_bytes:
        return Rejected(topic, payload, f"oversized payload: {len(payload)} bytes > {max_bytes}", "oversized")
    model = MESSAGES[kind]
    try:
        msg = model.model_validate_json(payload)
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
    return Valid(kind, device, msg)
