"""MQTT telemetry against a real Mosquitto: nothing lost, in order, across broker restarts and a
SIGKILLed agent; the bounded spool; status with Last Will; the daemon end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_agent.config import MqttConfig
from edge_agent.outputs.spool import Spool
from edge_agent.outputs.telemetry import Publisher
from sleepsafe.protocol import EventV2, Status, TelemetryV2, topic
from tests.conftest import wait_until


class Subscriber:
    """A real paho subscriber on sleepsafe/v1/#, resubscribing after reconnects."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}", protocol=mqtt.MQTTv5)
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe("sleepsafe/v1/#", qos=1)
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 1)
        # A persistent session (saved by the broker across its restart): QoS 1 messages that
        # arrive while this subscriber reconnects are queued for it, not dropped.
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
        c.loop_start()
        self.client = c

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[tuple[str, bytes, bool]]], bool], timeout: float = 60) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: pred(self.messages), timeout=timeout), (
                f"timed out; {len(self.messages)} messages"
            )

    def seqs(self, kind: str = "event") -> list[int]:
        return [json.loads(p)["n"] for t, p, _ in self.messages if t.endswith("/" + kind)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_spool_bounds_evict_telemetry_before_events(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.sqlite3", max_rows=10)
    s.put_many([("telemetry", "t", b"t%d" % i) for i in range(6)])
    s.put_many([("event", "e", b"e%d" % i) for i in range(8)])
    assert s.depth() == 10 and s.evicted() == {"telemetry": 4, "event": 0}
    s.put_many([("event", "e", b"x%d" % i) for i in range(5)])
    assert s.evicted() == {"telemetry": 6, "event": 3}
    rows = s.peek(100)
    assert [r.payload for r in rows] == [b"e3", b"e4", b"e5", b"e6", b"e7", b"x0", b"x1", b"x2", b"x3", b"x4"]
    s.close()


def test_spool_depth_never_shows_a_half_done_batch(tmp_path: Path) -> None:
    """depth() is read without the lock (stats, the drain loop): while a writer puts batches
    into a full spool it must only ever see committed counts — never rows inserted before their
    evictions (that once let a test see 81 rows in a 50-row spool)."""
    spool = Spool(tmp_path / "spool.sqlite3", max_rows=50)
    done = threading.Event()

    def writer() -> None:
        for _ in range(4):
            spool.put_many([("telemetry", "t", b"x" * 10) for _ in range(40)])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    while not done.is_set():
        seen.append(spool.depth())
    thread.join()
    assert max(seen) <= 50 and spool.depth() == 50
    assert spool.evicted()["telemetry"] == 4 * 40 - 50
    spool.close()


def test_spool_survives_reopen_and_acks_delete(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.sqlite3")
    ids = s.put_many([("event", "e", b"%d" % i) for i in range(5)])
    s.close()
    s = Spool(tmp_path / "s.sqlite3")
    assert [r.id for r in s.peek(10)] == ids and s.depth() == 5
    s.ack(ids[0])
    assert s.depth() == 4 and s.peek(1)[0].id == ids[1]
    assert s.next_seq() == 1 and s.next_seq() == 2
    s.close()


def _payload(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def test_nothing_lost_in_order_across_a_broker_restart(broker: Any, tmp_path: Path) -> None:
    sub = Subscriber(broker.port)
    spool = Spool(tmp_path / "spool.sqlite3")
    pub = Publisher(
        MqttConfig(enabled=True, host="127.0.0.1", port=broker.port, reconnect_min_s=1, reconnect_max_s=2),
        "bus-7",
        spool,
    ).start()
    try:
        for n in range(200):
            pub.submit("event", topic("bus-7", "event"), _payload(n))
        sub.wait_for(lambda m: len({x for x in _events(m)}) >= 200)
        broker.stop()
        for n in range(200, 500):
            pub.submit("event", topic("bus-7", "event"), _payload(n))
        wait_until(lambda: spool.depth() == 300, "300 events spooled while the broker is down")
        broker.start()
        try:
            sub.wait_for(lambda m: set(_events(m)) >= set(range(500)))
        except AssertionError:
            missing = sorted(set(range(500)) - set(_events(sub.messages)))
            raise AssertionError(
                f"missing {missing[:20]} ({len(missing)}); spool depth {spool.depth()}; "
                f"published {pub.published} acked {pub.acked} reconnects {pub.reconnects}"
            ) from None
        wait_until(lambda: spool.depth() == 0, "the spool to drain")
        got = _events(sub.messages)
        first_seen = list(dict.fromkeys(got))
        assert first_seen == list(range(500)), "in order, none missing"
        assert pub.reconnects >= 1
    finally:
        pub.stop()
        sub.close()


def _events(messages: list[tuple[str, bytes, bool]]) -> list[int]:
    return [json.loads(p)["n"] for t, p, _ in messages if t.endswith("/event")]


SPOOL_ONLY = """
import sys, threading
from pathlib import Path
from edge_agent.config import MqttConfig
from sleepsafe.protocol import topic
from edge_agent.outputs.spool import Spool
from edge_agent.outputs.telemetry import Publisher
from sleepsafe.logs import configure_logging
configure_logging("warning", "json")
spool = Spool(Path(sys.argv[1]))
pub = Publisher(MqttConfig(enabled=True, host="127.0.0.1", port=int(sys.argv[2])), "bus-9", spool).start()
for n in range(100):
    pub.submit("event", topic("bus-9", "event"), ('{"n": %d}' % n).encode())
while spool.depth() < 100:
    threading.Event().wait(0.05)
print("spooled", flush=True)
threading.Event().wait(600)
"""


def test_sigkilled_agent_delivers_its_spool_after_restart(broker: Any, tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    # Broker unreachable for the first process: a closed port.
    proc = subprocess.Popen(
        [sys.executable, "-c", SPOOL_ONLY, str(path), "1"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "spooled"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    sub = Subscriber(broker.port)
    spool = Spool(path)
    assert spool.depth() == 100
    pub = Publisher(MqttConfig(enabled=True, host="127.0.0.1", port=broker.port), "bus-9", spool).start()
    try:
        sub.wait_for(lambda m: set(_events(m)) >= set(range(100)))
        assert list(dict.fromkeys(_events(sub.messages))) == list(range(100))
    finally:
        pub.stop()
        sub.close()


def test_status_online_last_will_and_stopped(broker: Any, tmp_path: Path) -> None:
    sub = Subscriber(broker.port)

    def statuses() -> list[Status]:
        return [Status.model_validate_json(p) for t, p, _ in sub.messages if t.endswith("/status")]

    code = SPOOL_ONLY.replace("bus-9", "bus-3")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "a.sqlite3"), str(broker.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        sub.wait_for(lambda m: any(s.state == "online" for s in statuses()))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        sub.wait_for(lambda m: any(s.state == "offline" for s in statuses()))
    finally:
        if proc.poll() is None:
            proc.kill()
    first = [s for s in statuses() if s.device_id == "bus-3"]
    assert [s.state for s in first][:2] == ["online", "offline"] and first[0].seq == first[1].seq
    # A clean stop says "stopped", and a new session has a higher sequence number.
    spool = Spool(tmp_path / "a.sqlite3")
    pub = Publisher(MqttConfig(enabled=True, host="127.0.0.1", port=broker.port), "bus-3", spool).start()
    sub.wait_for(lambda m: sum(s.state == "online" for s in statuses()) >= 2)
    pub.stop()
    sub.wait_for(lambda m: any(s.state == "stopped" for s in statuses()))
    last = statuses()[-1]
    assert last.state == "stopped" and last.seq > first[0].seq
    sub.close()


def test_daemon_publishes_events_telemetry_stats_and_status(broker: Any, clips: Path, tmp_path: Path) -> None:
    sub = Subscriber(broker.port)
    sets = [
        f"state_dir={tmp_path / 'state'}",
        "device_id=bus-42",
        "alerts.sound.enabled=false",
        "source.on_eof=loop",
        "stats_interval_s=0.5",
        "mqtt.stats_interval_s=0.5",
        "mqtt.enabled=true",
        "mqtt.host=127.0.0.1",
        f"mqtt.port={broker.port}",
        "mqtt.telemetry_interval_s=0.5",
    ]
    args = [a for kv in sets for a in ("--set", kv)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", *args, "run", "--source", str(clips / "single_face.mp4")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:

        def kinds(m: list[tuple[str, bytes, bool]]) -> set[str]:
            return {t.rsplit("/", 1)[1] for t, _, _ in m if "/bus-42/" in t}

        def blinks_in_telemetry(m: list[tuple[str, bytes, bool]]) -> int:
            return sum(
                len(TelemetryV2.model_validate_json(p).blink_durations_ms)
                for t, p, _ in m
                if t.endswith("bus-42/telemetry")
            )

        # single_face.mp4 looped: one blink a loop, in telemetry.
        sub.wait_for(
            lambda m: {"status", "telemetry", "stats"} <= kinds(m) and blinks_in_telemetry(m) >= 2,
            timeout=90,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        sub.wait_for(lambda m: any(t.endswith("bus-42/status") and b'"stopped"' in p for t, p, _ in m))
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    # Protocol v2 by default: blinks are summarised in telemetry, not sent one event each.
    events = [EventV2.model_validate_json(p) for t, p, _ in sub.messages if t == "sleepsafe/v1/bus-42/event"]
    assert all(e.device_id == "bus-42" and e.type.value != "blink" for e in events)
    tele = [TelemetryV2.model_validate_json(p) for t, p, _ in sub.messages if t.endswith("bus-42/telemetry")]
    assert tele and tele[0].device_id == "bus-42"
    durations = [d for m in tele for d in m.blink_durations_ms]
    assert all(30 <= d <= 500 for d in durations)
    # Every event the agent journaled reached the broker, the blinks as telemetry.
    journal = [json.loads(x) for x in (tmp_path / "state" / "events.jsonl").read_text().splitlines()]
    sent = {(str(e.event_id), e.phase) for e in events}
    assert {(j["event_id"], j["phase"]) for j in journal if j["type"] != "blink"} <= sent
    # (The journal may hold a blink or two more: those after the last telemetry.)
    journal_blinks = Counter(j["duration_ms"] for j in journal if j["type"] == "blink")
    assert not Counter(durations) - journal_blinks


def test_spool_keeps_rows_until_their_receipt(tmp_path: Path) -> None:
    import sqlite3

    old = tmp_path / "old.sqlite3"  # a spool written before receipts existed
    db = sqlite3.connect(old)
    db.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
        "topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL);"
        "INSERT INTO outbox (kind, topic, payload, created) VALUES ('event', 't', x'00', 0);"
    )
    db.commit()
    db.close()
    s = Spool(old)
    assert s.depth() == 1 and not s.mark_sent(s.peek(1)[0].id), "a keyless row is acked, not kept"
    ids = s.put_many([("event", "t", b"a", "k1"), ("telemetry", "t", b"b", "k2"), ("event", "t", b"c", "k3")])
    assert s.mark_sent(ids[0]) and s.mark_sent(ids[1])
    assert [r.id for r in s.peek(10)] == [1, ids[2]], "rows awaiting a receipt are out of line"
    assert s.depth() == 4 and s.awaiting_receipt() == 2
    assert s.receipt(["k2", "nope"]) == 1 and s.depth() == 3
    assert s.requeue(0.0) == 1 and [r.id for r in s.peek(10)] == [1, ids[0], ids[2]]
    assert s.receipt(["k1", "k3"]) == 2 and s.depth() == 1
    s.close()


def test_publisher_keeps_rows_until_receipt_and_ignores_bad_receipts(broker: Any, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from sleepsafe.protocol import Receipt

    spool = Spool(tmp_path / "spool.sqlite3")
    cfg = MqttConfig(
        enabled=True, host="127.0.0.1", port=broker.port, await_receipt=True, receipt_timeout_s=600
    )
    pub = Publisher(cfg, "bus-8", spool).start()
    sink = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-sink", protocol=mqtt.MQTTv5)
    sink.connect("127.0.0.1", broker.port)
    sink.loop_start()
    try:
        for n in range(10):
            pub.submit("event", topic("bus-8", "event"), _payload(n), f"key-{n}")
        wait_until(lambda: pub.acked == 10, "10 PUBACKs")
        assert spool.depth() == 10 and spool.awaiting_receipt() == 10, "a PUBACK alone deletes nothing"

        def receipt(payload: bytes) -> None:
            sink.publish(topic("bus-8", "receipt"), payload, qos=1).wait_for_publish(10)

        receipt(b"\xff not json")  # logged and ignored; the publisher carries on
        now = datetime.now(timezone.utc)
        receipt(Receipt(device_id="bus-9", time=now, keys=["key-0"]).model_dump_json().encode())  # not ours
        receipt(
            Receipt(device_id="bus-8", time=now, keys=[f"key-{n}" for n in range(6)])
            .model_dump_json()
            .encode()
        )
        wait_until(lambda: spool.depth() == 4, "rows 0-5 deleted by their receipt")
        assert pub.receipts == 6 and pub.connected.is_set()
    finally:
        sink.loop_stop()
        sink.disconnect()
        pub.stop()


def test_receipt_resend_backs_off_while_no_sink_answers() -> None:
    from edge_agent.outputs.telemetry import MAX_RECEIPT_BACKOFF, next_backoff

    seq = [1]
    for _ in range(6):
        seq.append(next_backoff(seq[-1], receipts_since=False))
    assert seq == [1, 2, 4, 8, 16, MAX_RECEIPT_BACKOFF, MAX_RECEIPT_BACKOFF]
    assert next_backoff(16, receipts_since=True) == 1


def test_an_ack_command_reaches_the_agent_and_a_bad_one_is_ignored(broker: Any, tmp_path: Path) -> None:
    """A fleet tool publishes `{"command": "ack"}` on the vehicle's command topic: the publisher
    hands it to the agent; a malformed command is logged and dropped, and the link stays up."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from sleepsafe.protocol import Command

    spool = Spool(tmp_path / "spool.sqlite3")
    pub = Publisher(MqttConfig(enabled=True, host="127.0.0.1", port=broker.port), "bus-7", spool)
    got: list[Command] = []
    pub.on_command = got.append
    pub.start()
    tool = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ops-tool", protocol=mqtt.MQTTv5)
    tool.connect("127.0.0.1", broker.port)
    tool.loop_start()
    try:
        wait_until(pub.subscribed.is_set, "the command subscription")

        def send(payload: bytes) -> None:
            tool.publish(topic("bus-7", "command"), payload, qos=1).wait_for_publish(10)

        send(b'{"command": "reboot"}')
        send(b"\xff")
        old = datetime.now(timezone.utc).timestamp() - 3600
        stale = Command(command="ack", time=datetime.fromtimestamp(old, timezone.utc))
        send(stale.model_dump_json().encode())  # an hour late: the alert it meant has passed
        send(Command(command="ack", time=datetime.now(timezone.utc)).model_dump_json().encode())
        wait_until(lambda: len(got) == 1, "the ack")
        assert got[0].command == "ack" and pub.connected.is_set()
    finally:
        tool.loop_stop()
        tool.disconnect()
        pub.stop()
