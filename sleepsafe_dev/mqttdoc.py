"""Generate docs/mqtt.md from the protocol models (a test keeps the file current).

python -m sleepsafe_dev.mqttdoc > docs/mqtt.md
"""

from __future__ import annotations

import json
import sys

from pydantic import BaseModel

from sleepsafe.protocol import MESSAGES, PROTOCOL_VERSION, PROTOCOL_VERSIONS, TOPIC_ROOT, Receipt

_TOPICS = [
    (
        "status",
        "1",
        "yes",
        "`online` at each connect, Last Will `offline`, `stopped` on a clean exit; `seq` grows per session",
    ),
    (
        "event",
        "1",
        "no",
        "one alert record (`raised` / `ended`) or momentary event (`instant`); unique by `(event_id, phase)`",
    ),
    ("telemetry", "1", "no", "periodic driver summary (`mqtt.telemetry_interval_s`); unique by `msg_id`"),
    (
        "stats",
        "0",
        "no",
        "runtime health every `mqtt.stats_interval_s`; only the newest matters, not spooled",
    ),
    (
        "receipt",
        "1",
        "no",
        "sink → vehicle: keys of messages committed; with `mqtt.await_receipt` a spooled row leaves "
        "only on its receipt",
    ),
]


def render() -> str:
    versions = " and ".join(f"v{v}" for v in PROTOCOL_VERSIONS)
    out = [
        f"# MQTT protocol ({versions})",
        "",
        "Generated from `sleepsafe/protocol.py` by `python -m sleepsafe_dev.mqttdoc` (a test fails when",
        'this file and the models disagree). Every payload is JSON with `"v"`, its schema version.',
        f"Vehicles send v{PROTOCOL_VERSION} by default (`mqtt.protocol`); the sink reads {versions} side by",
        "side, so a fleet upgrades one vehicle at a time.",
        "",
        "What v2 changes: an event's feature window is one array per feature (`window`, with `t_ms`",
        "and `frame` delta-coded and each value at the precision the agent keeps) instead of a list of",
        "objects; blinks are summarised in telemetry (`blink_durations_ms`, `long_blinks` since the",
        "last telemetry) instead of one event each (`mqtt.blink_events = true` sends them too, for",
        "a vehicle collecting training data); status, stats and receipts are the same in both.",
        "Values must be finite and in physical ranges, integers within 32-bit columns, text without",
        "NUL and of bounded length, and times near the sink's clock: anything else is a dead letter",
        "with the reason.",
        "",
        "| topic | QoS | retained | what |",
        "|---|---|---|---|",
    ]
    for name, qos, retain, what in _TOPICS:
        out.append(f"| `{TOPIC_ROOT}/<device_id>/{name}` | {qos} | {retain} | {what} |")
    out += [
        "",
        "The MQTT client id is the device id (unique per vehicle). Every QoS 1 message is written to",
        "the on-disk spool (`state_dir/spool.sqlite3`) first and deleted only on PUBACK: delivery is",
        "at least once and in order, across broker outages, daemon crashes (SIGKILL) and restarts. A",
        "receiver must therefore store idempotently: events by `(event_id, phase)`, telemetry by",
        "`msg_id`. When the spool is full, telemetry is evicted before events (counted in `stats`).",
        "",
        "End-to-end delivery (`mqtt.await_receipt = true`): a PUBACK only moves the row to 'awaiting",
        "receipt'; the sink publishes a `receipt` with the keys it has committed, and only then is the",
        "row deleted. A row with no receipt after `mqtt.receipt_timeout_s` is sent again. This holds",
        "even when a broker drops messages it had acknowledged (Mosquitto after a restart, for shared",
        "subscriptions: docs/sink.md).",
        "",
    ]
    models: list[tuple[str, type[BaseModel]]] = []
    for name, by_version in MESSAGES.items():
        distinct = dict.fromkeys(by_version.values())
        for v, model in by_version.items():
            if model in distinct:
                label = name if len(distinct) == 1 else f"{name} v{v}"
                models.append((label, model))
                del distinct[model]
    models.append(("receipt", Receipt))
    for name, model in models:
        out += [f"## `{name}`", "", "```json", json.dumps(model.model_json_schema(), indent=2), "```", ""]
    return "\n".join(out)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
