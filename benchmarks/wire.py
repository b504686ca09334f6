"""Bytes on the wire per vehicle-hour at default settings: protocol v2 against v1, one run.

Every labelled clip that `make eval` scores goes through the real agent pipeline once; each frame's
events are dispatched by two real agents (``Agent._dispatch``) with MQTT on, one per protocol, each
publishing through its own real Publisher and spool to a real Mosquitto. Their periodic tasks
(``Agent._telemetry_task``, ``Agent._stats_task``) are the real coroutines, woken on the clip's
clock instead of the wall's: every ``mqtt.telemetry_interval_s`` / ``stats_interval_s`` of clip
time they build their messages from the detector's state, as the daemon does. A subscriber on
``sleepsafe/v1/#`` counts what arrives (topic and payload lengths); each message costs what its
MQTT 5 PUBLISH packet costs (``PACKET_FORMULA``).

Per vehicle-hour:

  status     ``--sessions-per-hour`` sessions, each ``online`` + ``stopped`` (the Last Will rides
             in CONNECT: not counted)
  telemetry  3600 / telemetry_interval_s messages at the measured mean size
  stats      3600 / stats_interval_s messages at the measured mean size
  event      fleet-typical (``bytes_per_vehicle_hour``): the clips' blink rate (v1: one event
             each; v2: nothing beyond their durations in telemetry, already measured) plus
             ``--alerts-per-hour`` alerts, each a raised + an ended record at the measured mean
             alert-record size.  Worst case: every event of the clips, per hour of clip time
             ("as drowsy as these clips all hour").

Also checks that v2 loses nothing: every event published in v1 form against its v2 form turned
back into v1 (the one v2 published, or for a blink, which v2 sends only with mqtt.blink_events,
the one it would); every v1 telemetry against the v2 telemetry of the same instant; every v2
telemetry's blink durations against the v1 blink events since the telemetry before.

    python benchmarks/wire.py [--json] [--clips DIR] [--alerts-per-hour 4]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import functools
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.config import MqttConfig  # noqa: E402
from sleepsafe.exitcodes import Exit  # noqa: E402
from sleepsafe.protocol import (  # noqa: E402
    Event,
    EventType,
    EventV2,
    Telemetry,
    TelemetryV2,
    wire_event,
)

GOAL_BYTES = 300_000  # per vehicle-hour, protocol v2, fleet-typical (KB = 1000 bytes)
TOPICS = ("status", "event", "telemetry", "stats")
VERSIONS: tuple[Literal[1, 2], ...] = (2, 1)
# Same length as the default device id ("edge-0"), so topics cost what they cost by default; two
# ids because the client id is the device id and a broker keeps one session per id.
DEVICE = {2: "edge-2", 1: "edge-1"}
PACKET_FORMULA = (
    "MQTT 5 PUBLISH = 1 (fixed header) + len(varint(remaining length)) + 2 + len(topic) "
    "+ 2 (packet id, QoS 1 only) + 1 (properties length, no properties) + len(payload); "
    "PUBACK, CONNECT (with its Last Will), keep-alives, TCP/IP and TLS are not counted"
)
_real_sleep = asyncio.sleep
DEFAULT_LABELS = [
    "{shared}/data/labels.csv",
    "data/labels/wolfgang.csv",
    "data/labels/clmtrackr.csv",
    "data/labels/carphone.csv",
    "data/labels/kphotoalbum.csv",
    "data/labels/saurongaze.csv",
]


def publish_packet_bytes(topic_len: int, payload_len: int, qos: int) -> int:
    """Bytes of one MQTT 5 PUBLISH packet without properties (see PACKET_FORMULA)."""
    remaining = 2 + topic_len + (2 if qos > 0 else 0) + 1 + payload_len
    varint = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + varint + remaining


def progress(what: str) -> None:
    print(f"[wire] {what}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the subscriber


@dataclass(frozen=True, slots=True)
class Received:
    device: str
    kind: str
    payload: bytes
    qos: int
    wire: int  # PUBLISH packet bytes


class Subscriber:
    """A real MQTT client on ``sleepsafe/v1/#`` that keeps what it receives, in order."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.got: list[Received] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wire-meter", protocol=mqtt.MQTTv5)
        c.on_connect = lambda cl, *a: cl.subscribe("sleepsafe/v1/#", qos=1)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not ready.wait(10):
            raise RuntimeError("the subscriber could not subscribe")
        self.client = c

    def _on_message(self, client: Any, userdata: Any, m: Any) -> None:
        _, _, device, kind = m.topic.split("/")
        topic_len = len(m.topic.encode())
        payload = bytes(m.payload)
        r = Received(device, kind, payload, m.qos, publish_packet_bytes(topic_len, len(payload), m.qos))
        with self._lock:
            self.got.append(r)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.got)

    def count(self, device: str, kind: str) -> int:
        return sum(1 for r in self.snapshot() if r.device == device and r.kind == kind)

    def arrived(self, device: str, kind: str, n: int) -> bool:
        return self.count(device, kind) >= n

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    ev = threading.Event()
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        ev.wait(0.02)


# ----------------------------------------------------------------------------- the clip clock


class ClipClock:
    """Stands in for ``asyncio.sleep`` while the agents' periodic tasks run: they wake after so
    many seconds of clip time, as the daemon's wake after so many seconds of wall time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._waiters: list[tuple[float, int, str, asyncio.Future[None]]] = []
        self._n = 0
        self.fired: Counter[str] = Counter()

    async def sleep(self, seconds: float, result: Any = None) -> Any:
        task = asyncio.current_task()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._n += 1
        self._waiters.append((self.now + seconds, self._n, task.get_name() if task else "?", fut))
        await fut
        return result

    async def advance(self, now: float) -> None:
        """Clip time is now ``now``: wake each task whose sleep is over, one at a time in the
        order they went to sleep, and let it run to its next sleep."""
        self.now = now
        due = sorted((w for w in self._waiters if w[0] <= now), key=lambda w: (w[0], w[1]))
        for w in due:
            self._waiters.remove(w)
            w[3].set_result(None)
            self.fired[w[2]] += 1
            await _real_sleep(0)


# ----------------------------------------------------------------------------- the run


@dataclass(slots=True)
class ClipRun:
    clip: str
    frames: int
    seconds: float
    fps: float
    events: list[Event] = field(default_factory=list)  # as the v1 vehicle dispatched them
    blinks: int = 0
    sent: dict[tuple[str, str], int] = field(default_factory=dict)  # (device, kind): messages
    end: int = 0  # how many messages the subscriber had at the clip's end
    clock_shift_s: float = 0.0  # added to the clip's timestamps (see replay)


def labelled_clips(labels: list[Path]) -> list[str]:
    names: list[str] = []
    for path in labels:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get("clip") and row["clip"] not in names:
                    names.append(row["clip"])
    return names


EYE_CROPS = False  # --eye-crops: events carry their window's eye crops (capture.eye_crops)


def make_config(version: Literal[1, 2], port: int, state: Path) -> Any:
    from edge_agent.config import EdgeConfig, load_config

    return load_config(
        None,
        {
            "capture": {"eye_crops": "true" if EYE_CROPS else "false"},
            "device_id": DEVICE[version],
            "state_dir": str(state / f"v{version}"),
            "alerts": {"sound": {"enabled": "false"}},
            "logging": {"level": "warning"},
            "mqtt": {
                "enabled": "true",
                "host": "127.0.0.1",
                "port": str(port),
                "protocol": version,
                # Every stats tick published, to sample the message size; the rate per hour is
                # taken from the default mqtt.stats_interval_s (see figures()).
                "stats_interval_s": EdgeConfig.model_fields["stats_interval_s"].default,
            },
        },
    )


async def replay(clip: Path, cfgs: dict[Literal[1, 2], Any], publishers: dict[Literal[1, 2], Any]) -> ClipRun:
    """One clip through one real pipeline; both agents dispatch its events and run their
    periodic tasks on its clock."""
    from edge_agent.daemon import Agent, LatencyWindow
    from edge_agent.perception.capture import clip_fps, open_capture, parse_source, read_clip
    from edge_agent.perception.landmarks import FrameError
    from edge_agent.pipeline import Pipeline

    cap = open_capture(parse_source(str(clip)))
    fps = clip_fps(cap)
    cap.release()
    run = ClipRun(clip.name, 0, 0.0, fps)
    pipe = Pipeline(cfgs[2], full_landmarks=False)  # the detector's device id is replaced below
    agents = {v: Agent(cfgs[v], install_signals=False) for v in VERSIONS}
    for v, a in agents.items():
        a.pipeline = pipe
        a.publisher = publishers[v]
    agents[1].on_event = run.events.append
    clock = ClipClock()
    t_last = 0.0
    with mock.patch.object(asyncio, "sleep", clock.sleep):
        # v2 first: both agents' telemetry drains the detector's blink durations, which only
        # v2 sends (v1 drops what it takes), so v2 must take them first at each instant.
        tasks = [asyncio.create_task(agents[v]._telemetry_task(), name=f"telemetry-v{v}") for v in VERSIONS]
        tasks += [asyncio.create_task(agents[v]._stats_task(), name=f"stats-v{v}") for v in VERSIONS]
        await _real_sleep(0)  # each task to its first sleep
        try:
            for index, t_clip, frame in read_clip(clip):
                # Some .mov clips start before 0 (edit lists: face_noface.mov at -17 ms), which
                # the agent's FeatureSample (t_ms >= 0) refuses: start such a clip's clock at 0.
                if index == 0 and t_clip < 0:
                    run.clock_shift_s = -t_clip
                t = t_clip + run.clock_shift_s
                t0 = time.perf_counter()
                try:
                    res = pipe.process(frame, t, index)
                except FrameError:
                    for a in agents.values():
                        a.bad_frames += 1
                    continue
                t1 = time.perf_counter()
                events = [_as_device(e, DEVICE[1]) for e in res.events]
                agents[1]._dispatch(events)
                agents[2]._dispatch([_as_device(e, DEVICE[2]) for e in res.events])
                stages = {**pipe.stage_s, "alerts": time.perf_counter() - t1}
                for a in agents.values():
                    a.latency.add(t1 - t0)
                    for name, seconds in stages.items():
                        a.stage_latency.setdefault(name, LatencyWindow()).add(seconds)
                    a.frames += 1
                    a.fps = round(fps, 2)  # a live agent runs at its camera's rate
                run.frames += 1
                t_last = t
                await clock.advance(t)
            last = pipe.finish()
            agents[1]._dispatch([_as_device(e, DEVICE[1]) for e in last])
            agents[2]._dispatch([_as_device(e, DEVICE[2]) for e in last])
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            pipe.close()
    run.seconds = t_last + 1.0 / fps
    run.blinks = pipe.detector.status().blinks
    # Everything this clip made has arrived before the next clip starts (clip boundaries in
    # the stream, for the blink check and the per-clip table).
    run.sent = {
        (DEVICE[v], k): n
        for v in VERSIONS
        for k, n in (
            ("event", sum(1 for e in run.events if e.type is not EventType.BLINK or v == 1)),
            ("telemetry", clock.fired[f"telemetry-v{v}"]),
            ("stats", clock.fired[f"stats-v{v}"]),
        )
    }
    return run


def _as_device(e: Event, device: str) -> Event:
    """The same event as the other vehicle's (the detector is shared; the device id is the
    vehicle's). Same length, so the same bytes."""
    return e if e.device_id == device else e.model_copy(update={"device_id": device})


# ----------------------------------------------------------------------------- checks


def _key(e: Event | EventV2) -> tuple[str, str]:
    return str(e.event_id), e.phase


def check_events(got: list[Received], originals: list[Event]) -> dict[str, Any]:
    """Every event published in v1 form against its v2 form turned back into v1."""
    v1 = {_key(e): e for e in (Event.model_validate_json(r.payload) for r in got if _is(r, 1, "event"))}
    v2 = {_key(e): e for e in (EventV2.model_validate_json(r.payload) for r in got if _is(r, 2, "event"))}
    orig = {_key(e): e for e in originals}
    mismatches: list[str] = []
    from_wire = from_model = 0
    for key, e1 in v1.items():
        if key in v2:
            e2 = v2[key]
            from_wire += 1
        else:  # a blink: v2 sends it only with mqtt.blink_events, so as it would
            e2 = EventV2.model_validate_json(
                wire_event(orig[key].model_copy(update={"device_id": DEVICE[2]}), 2)
            )
            from_model += 1
        back = e2.window.samples() if e2.window is not None else []
        same = e1.model_dump(exclude={"v", "features", "device_id"}) == e2.model_dump(
            exclude={"v", "window", "device_id"}
        )
        if back != e1.features or not same:
            mismatches.append(f"{key}: {'window' if back != e1.features else 'fields'} differ")
        if e1 != orig[key]:
            mismatches.append(f"{key}: v1 on the wire differs from the agent's event")
    extra = set(v2) - set(v1)
    mismatches += [f"{k}: published in v2 only" for k in extra]
    return {
        "events_compared": len(v1),
        "compared_with_v2_from_the_wire": from_wire,
        "compared_with_v2_as_it_would_be_sent": from_model,
        "frames_compared": sum(len(e.features) for e in v1.values()),
        "event_mismatches": len(mismatches),
        "examples": mismatches[:5],
    }


def check_telemetry(got: list[Received], boundaries: list[int]) -> dict[str, Any]:
    """v1 and v2 telemetry of the same instants agree on every v1 field; each v2 telemetry's
    blink durations are those of the v1 blink events since the telemetry before (in clip)."""
    lost = sorted(set(Telemetry.model_fields) - set(TelemetryV2.model_fields))
    t2 = [TelemetryV2.model_validate_json(r.payload) for r in got if _is(r, 2, "telemetry")]
    mismatches: list[str] = []
    blink_mismatches: list[str] = []
    i2 = 0
    durations: list[int] = []
    skip = {"v", "msg_id", "time", "device_id", "blink_durations_ms", "long_blinks"}
    for i, r in enumerate(got):
        if i in boundaries:
            durations = []  # a new clip, a new session: blinks after a clip's last telemetry stay
        if not (r.device == DEVICE[1] and r.kind in ("event", "telemetry")):
            continue
        if r.kind == "event":
            e = Event.model_validate_json(r.payload)
            if e.type is EventType.BLINK:
                durations.append(e.duration_ms or 0)
            continue
        t1 = Telemetry.model_validate_json(r.payload)
        if i2 >= len(t2):
            mismatches.append(f"v1 telemetry {t1.msg_id}: no v2 telemetry of the same instant")
            continue
        v2 = t2[i2]
        i2 += 1
        if t1.model_dump(exclude=skip) != v2.model_dump(exclude=skip):
            mismatches.append(f"telemetry #{i2}: fields differ")
        if v2.blink_durations_ms != durations:
            blink_mismatches.append(f"telemetry #{i2}: {v2.blink_durations_ms} != {durations}")
        durations = []
    mismatches += [f"v2 telemetry #{k + 1}: no v1 telemetry" for k in range(i2, len(t2))]
    return {
        "telemetry_fields_missing_in_v2": lost,
        "telemetry_compared": i2,
        "telemetry_mismatches": len(mismatches) + len(lost),
        "blinks_in_v2_telemetry": sum(len(t.blink_durations_ms) for t in t2),
        "blink_duration_mismatches": len(blink_mismatches),
        "examples": (mismatches + blink_mismatches)[:5],
    }


def _is(r: Received, v: int, kind: str) -> bool:
    return r.device == DEVICE[v] and r.kind == kind


# ----------------------------------------------------------------------------- the figures


def _mean(xs: list[int]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def figures(
    got: list[Received],
    runs: list[ClipRun],
    cfg: Any,
    alerts_per_hour: float,
    sessions_per_hour: float,
) -> dict[str, Any]:
    seconds = sum(r.seconds for r in runs)
    blinks = sum(r.blinks for r in runs)
    blinks_per_hour = blinks / seconds * 3600
    per_hour = {
        "status": 2 * sessions_per_hour,
        "telemetry": 3600 / cfg.mqtt.telemetry_interval_s,
        "stats": 3600 / max(cfg.stats_interval_s, MqttConfig.model_fields["stats_interval_s"].default),
    }
    out: dict[str, Any] = {}
    for v in VERSIONS:
        mine = [r for r in got if r.device == DEVICE[v]]
        wires = {k: [r.wire for r in mine if r.kind == k] for k in TOPICS}
        payloads = {k: [len(r.payload) for r in mine if r.kind == k] for k in TOPICS}
        events = [
            (Event if v == 1 else EventV2).model_validate_json(r.payload) for r in mine if r.kind == "event"
        ]
        ev_wire = [r.wire for r in mine if r.kind == "event"]
        alert_wire = [w for e, w in zip(events, ev_wire, strict=True) if e.phase in ("raised", "ended")]
        blink_wire = [w for e, w in zip(events, ev_wire, strict=True) if e.type is EventType.BLINK]
        other_wire = [
            w
            for e, w in zip(events, ev_wire, strict=True)
            if e.phase == "instant" and e.type is not EventType.BLINK
        ]
        mean = {k: _mean(wires[k]) for k in TOPICS}
        timed = {k: per_hour[k] * mean[k] for k in ("status", "telemetry", "stats")}
        blink_bytes = blinks_per_hour * _mean(blink_wire) if v == 1 else 0.0
        typical_event = blink_bytes + alerts_per_hour * 2 * _mean(alert_wire)
        worst_event = sum(ev_wire) / seconds * 3600
        typical = {**timed, "event": typical_event}
        worst = {**timed, "event": worst_event}
        out[f"v{v}"] = {
            "bytes_per_vehicle_hour": round(sum(typical.values())),
            "by_topic": {k: round(typical[k]) for k in TOPICS},
            "worst_case": {
                "bytes_per_vehicle_hour": round(sum(worst.values())),
                "by_topic": {k: round(worst[k]) for k in TOPICS},
            },
            "messages_per_hour": {
                **{k: round(per_hour[k], 1) for k in ("status", "telemetry", "stats")},
                "event_fleet_typical": round((blinks_per_hour if v == 1 else 0) + 2 * alerts_per_hour, 1),
                "event_worst_case": round(len(ev_wire) / seconds * 3600, 1),
            },
            "mean_packet_bytes": {k: round(mean[k], 1) for k in TOPICS}
            | {
                "alert_record": round(_mean(alert_wire), 1),
                "blink_event": round(_mean(blink_wire), 1),
                "other_instant": round(_mean(other_wire), 1),
            },
            "mean_payload_bytes": {k: round(_mean(payloads[k]), 1) for k in TOPICS},
            "messages_measured": {k: len(wires[k]) for k in TOPICS}
            | {
                "alert_records": len(alert_wire),
                "blink_events": len(blink_wire),
                "other_instants": len(other_wire),
            },
        }
    v1, v2 = out["v1"], out["v2"]
    out["ratio_v1_over_v2"] = {
        "fleet_typical": round(v1["bytes_per_vehicle_hour"] / v2["bytes_per_vehicle_hour"], 2),
        "worst_case": round(
            v1["worst_case"]["bytes_per_vehicle_hour"] / v2["worst_case"]["bytes_per_vehicle_hour"], 2
        ),
        "by_topic": {
            k: round(v1["by_topic"][k] / v2["by_topic"][k], 2) if v2["by_topic"][k] else None for k in TOPICS
        },
        "alert_record": round(
            v1["mean_packet_bytes"]["alert_record"] / v2["mean_packet_bytes"]["alert_record"], 2
        ),
    }
    out["clips_seconds"] = round(seconds, 2)
    out["blinks"] = blinks
    out["blinks_per_hour"] = round(blinks_per_hour, 1)
    return out


# ----------------------------------------------------------------------------- main


async def run_all(clips: list[Path], port: int, state: Path, sub: Subscriber) -> tuple[list[ClipRun], Any]:
    from edge_agent.outputs.spool import Spool
    from edge_agent.outputs.telemetry import Publisher

    cfgs = {v: make_config(v, port, state) for v in VERSIONS}
    publishers = {}
    for v in VERSIONS:
        cfgs[v].state_dir.mkdir(parents=True, exist_ok=True)
        spool = Spool(cfgs[v].state_dir / "spool.sqlite3")
        publishers[v] = Publisher(cfgs[v].mqtt, cfgs[v].device_id, spool).start()
    for v in VERSIONS:
        if not publishers[v].connected.wait(10):
            raise RuntimeError(f"v{v} publisher did not connect")
    runs: list[ClipRun] = []
    totals: Counter[tuple[str, str]] = Counter()
    try:
        for clip in clips:
            t0 = time.perf_counter()
            run = await replay(clip, cfgs, publishers)
            totals.update(run.sent)
            for (device, kind), n in totals.items():
                wait_for(
                    functools.partial(sub.arrived, device, kind, n),
                    f"{n} {kind} messages of {device} (have {sub.count(device, kind)})",
                )
            run.end = len(sub.snapshot())
            runs.append(run)
            progress(
                f"{clip.name}: {run.frames} frames, {run.seconds:.1f} s, {len(run.events)} events "
                f"({run.blinks} blinks), {time.perf_counter() - t0:.1f} s"
            )
    finally:
        for v in VERSIONS:
            await asyncio.to_thread(publishers[v].stop)
            publishers[v].spool.close()
    wait_for(lambda: sum(1 for r in sub.snapshot() if r.kind == "status") >= 4, "online + stopped of both")
    return runs, cfgs[2]


def table(out: dict[str, Any]) -> str:
    v1, v2 = out["v1"], out["v2"]
    ratio = out["ratio_v1_over_v2"]

    def kb(x: float) -> str:
        return f"{x / 1000:,.1f} KB"

    lines = [
        "Bytes on the wire per vehicle-hour, default settings (MQTT 5 PUBLISH packets, real Mosquitto)",
        f"clips: {len(out['clips'])} labelled clips, {out['clips_seconds']:.1f} s, {out['frames']} frames; "
        f"blinks {out['blinks']} ({out['blinks_per_hour']:.0f}/h); fleet-typical alerts/h "
        f"{out['assumptions']['alerts_per_hour']:g}; sessions/h {out['assumptions']['sessions_per_hour']:g}",
        "",
        f"{'fleet-typical':<22}{'v2 (default)':>16}{'v1':>16}{'v1/v2':>9}",
    ]
    for k in TOPICS:
        r = ratio["by_topic"][k]
        lines.append(
            f"  {k:<20}{kb(v2['by_topic'][k]):>16}{kb(v1['by_topic'][k]):>16}"
            f"{(f'{r:.2f}' if r is not None else '-'):>9}"
        )
    lines.append(
        f"  {'total':<20}{kb(v2['bytes_per_vehicle_hour']):>16}{kb(v1['bytes_per_vehicle_hour']):>16}"
        f"{ratio['fleet_typical']:>9.2f}"
    )
    lines += ["", f"{'worst case (clips all hour)':<22}"]
    for k in TOPICS:
        a, b = v2["worst_case"]["by_topic"][k], v1["worst_case"]["by_topic"][k]
        lines.append(f"  {k:<20}{kb(a):>16}{kb(b):>16}{(f'{b / a:.2f}' if a else '-'):>9}")
    lines.append(
        f"  {'total':<20}{kb(v2['worst_case']['bytes_per_vehicle_hour']):>16}"
        f"{kb(v1['worst_case']['bytes_per_vehicle_hour']):>16}{ratio['worst_case']:>9.2f}"
    )
    lines += ["", f"{'mean packet (bytes)':<22}{'v2':>16}{'v1':>16}{'msgs/h':>9}{'measured v2/v1':>16}"]
    mp = v2["messages_per_hour"]
    n2, n1 = v2["messages_measured"], v1["messages_measured"]
    for k, per, n in (
        ("status", mp["status"], "status"),
        ("telemetry", mp["telemetry"], "telemetry"),
        ("stats", mp["stats"], "stats"),
        ("alert_record", None, "alert_records"),
        ("blink_event", None, "blink_events"),
    ):
        a, b = v2["mean_packet_bytes"][k], v1["mean_packet_bytes"][k]
        lines.append(
            f"  {k:<20}{(f'{a:.1f}' if n2[n] else 'not sent'):>16}{(f'{b:.1f}' if n1[n] else 'not sent'):>16}"
            f"{(f'{per:g}' if per is not None else ''):>9}{f'{n2[n]}/{n1[n]}':>16}"
        )
    goal = out["goal"]
    lines += [
        "",
        f"goal: v2 fleet-typical <= {goal['bytes_per_vehicle_hour'] / 1000:.0f} KB per vehicle-hour: "
        f"{'MET' if goal['met'] else 'NOT met'} ({kb(v2['bytes_per_vehicle_hour'])}"
        + (f", over by {kb(-goal['headroom_bytes'])})" if not goal["met"] else ")"),
        "  what if (v2, from the sizes measured; a longer telemetry interval carries more blink "
        "durations, ~4 B each): " + "; ".join(f"{k}: {kb(x)}" for k, x in out["what_if_v2"].items()),
    ]
    ev, te = out["lossless"]["events"], out["lossless"]["telemetry"]
    lines += [
        f"v2 loses nothing: {ev['events_compared']} events ({ev['frames_compared']} frames) compared, "
        f"{ev['event_mismatches']} mismatches; {te['telemetry_compared']} telemetry compared, "
        f"{te['telemetry_mismatches']} mismatches; {te['blinks_in_v2_telemetry']} blink durations in v2 "
        f"telemetry, {te['blink_duration_mismatches']} mismatches",
        "",
        f"wire: {PACKET_FORMULA}",
        f"time-driven: {out['method']['time_driven']}",
        f"events: {out['method']['events']}",
        f"runtime {out['runtime_s']:.0f} s",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, help="clip directory (default: the fetch-clips cache)")
    ap.add_argument(
        "--labels", type=Path, action="append", help="labels CSV naming the clips (default: make eval's)"
    )
    ap.add_argument(
        "--alerts-per-hour", type=float, default=4.0, help="fleet-typical alerts (raised + ended) per hour"
    )
    ap.add_argument(
        "--sessions-per-hour", type=float, default=1.0, help="connects per hour (status online + stopped)"
    )
    ap.add_argument(
        "--eye-crops", action="store_true", help="events carry their eye crops (capture.eye_crops = true)"
    )
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ap.add_argument("--table-from", type=Path, help="print the table of a saved --json run, run nothing")
    a = ap.parse_args()
    globals()["EYE_CROPS"] = a.eye_crops
    if a.table_from:
        print(table(json.loads(a.table_from.read_text())))
        return 0
    wall0 = time.perf_counter()

    from edge_agent.devtools.clips import fetch_clips
    from sleepsafe.logs import configure_logging
    from tests.conftest import Mosquitto

    configure_logging("warning", "json")
    shared = Path(os.environ.get("SLEEPSAFE_SHARED_DIR", REPO.parent / "shared"))
    labels = a.labels or [REPO / p.format(shared=shared) for p in DEFAULT_LABELS]
    missing = [str(p) for p in labels if not p.is_file()]
    if missing:
        progress(f"labels not found, skipped: {', '.join(missing)}")
    labels = [p for p in labels if p.is_file()]
    directory = a.clips or fetch_clips()
    names = labelled_clips(labels)
    clips = [directory / n for n in names if (directory / n).is_file()]
    if not clips:
        print(f"wire: no labelled clips in {directory}", file=sys.stderr)
        return int(Exit.NOINPUT)

    tmp = Path(tempfile.mkdtemp(prefix="wire-bench-"))
    broker = Mosquitto(tmp / "broker")
    broker.start()
    try:
        sub = Subscriber(broker.port)
        try:
            runs, cfg = asyncio.run(run_all(clips, broker.port, tmp, sub))
        finally:
            sub.close()
    finally:
        broker.stop()
    got = sub.snapshot()
    boundaries = [r.end for r in runs]
    originals = [e for r in runs for e in r.events]
    out: dict[str, Any] = {
        "clips": [r.clip for r in runs],
        "labels": [os.path.relpath(p, REPO) for p in labels],
        "frames": sum(r.frames for r in runs),
    }
    out |= figures(got, runs, cfg, a.alerts_per_hour, a.sessions_per_hour)
    out["goal"] = {
        "bytes_per_vehicle_hour": GOAL_BYTES,
        "of": "v2 fleet-typical",
        "met": out["v2"]["bytes_per_vehicle_hour"] <= GOAL_BYTES,
        "headroom_bytes": GOAL_BYTES - out["v2"]["bytes_per_vehicle_hour"],
    }
    v2 = out["v2"]
    stats_mean, tele_mean = v2["mean_packet_bytes"]["stats"], v2["mean_packet_bytes"]["telemetry"]
    base = v2["bytes_per_vehicle_hour"] - v2["by_topic"]["stats"] - v2["by_topic"]["telemetry"]
    out["what_if_v2"] = {
        f"stats_interval_s={s_i:g}, telemetry_interval_s={t_i:g}": round(
            base + 3600 / s_i * stats_mean + 3600 / t_i * tele_mean
        )
        for s_i, t_i in ((30, 10), (60, 10), (60, 30))
    }
    out["lossless"] = {"events": check_events(got, originals), "telemetry": check_telemetry(got, boundaries)}
    out["assumptions"] = {
        "alerts_per_hour": a.alerts_per_hour,
        "sessions_per_hour": a.sessions_per_hour,
        "telemetry_interval_s": cfg.mqtt.telemetry_interval_s,
        "stats_interval_s": cfg.stats_interval_s,
        "mqtt_stats_interval_s": MqttConfig.model_fields["stats_interval_s"].default,
        "blink_events_v2": cfg.mqtt.blink_events,
        "device_id_length": len(DEVICE[2]),
        "kb": 1000,
    }
    out["method"] = {
        "wire": PACKET_FORMULA,
        "time_driven": (
            "the agent's own _telemetry_task and _stats_task, woken every telemetry_interval_s / "
            "stats_interval_s of clip time while the clips replay (fps in stats = the clip's), built "
            "from the live detector; per hour = 3600 / interval x the mean measured packet"
        ),
        "events": (
            "fleet-typical = the clips' blink rate x the mean blink-event packet (v1 only: v2 sends "
            "their durations in telemetry) + alerts_per_hour x 2 (raised + ended) x the mean "
            "alert-record packet; worst case = every event of the clips per hour of clip time"
        ),
    }
    out["per_clip"] = [
        {
            "clip": r.clip,
            "frames": r.frames,
            "seconds": round(r.seconds, 2),
            "events": len(r.events),
            "blinks": r.blinks,
            "alert_records": sum(1 for e in r.events if e.phase != "instant"),
            "types": dict(Counter(f"{e.type.value}:{e.phase}" for e in r.events)),
            **({"clock_shift_s": round(r.clock_shift_s, 4)} if r.clock_shift_s else {}),
        }
        for r in runs
    ]
    out["cpus"] = os.cpu_count()
    out["runtime_s"] = round(time.perf_counter() - wall0, 1)
    print(json.dumps(out) if a.json else table(out))
    bad = out["lossless"]["events"]["event_mismatches"] + out["lossless"]["telemetry"]["telemetry_mismatches"]
    bad += out["lossless"]["telemetry"]["blink_duration_mismatches"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
