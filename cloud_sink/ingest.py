"""MQTT ingest: a shared subscription with a persistent session, acknowledged only after commit.

paho runs in manual-ack mode: a QoS 1 message is acknowledged (PUBACK) only once the
transaction holding it has committed.  If the sink dies between receiving and committing, the
broker still holds the message for this sink's session and delivers it again after the restart;
storage is idempotent, so the redelivery is stored once.  If the database is down, the batch is
retried (never dropped) and, since nothing is acknowledged, the broker stops sending at
``receive_maximum`` unacknowledged messages and queues the rest.

The network thread only appends to a deque; one writer thread validates, writes in batches
(group commit: whatever arrived while the last batch was written) and acknowledges in order.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sleepsafe.mqtt import jitter_backoff, new_client
from sleepsafe.protocol import (
    TOPIC_ROOT,
    Event,
    EventV2,
    Receipt,
    Telemetry,
    TelemetryV2,
    receipt_key,
    topic,
)

from .config import SinkConfig
from .store import Store, one_line
from .validate import ClockWindow, Rejected, Valid, parse_topic, validate

log = structlog.get_logger(__name__)

# Retained model releases the sink itself publishes live here: not telemetry, never dead letters.
FLEET_PREFIX = f"{TOPIC_ROOT}/fleet/"
RECEIPT_SUFFIX = "/receipt"
COMMAND_SUFFIX = "/command"  # from operators' tools to a vehicle: not telemetry either


def receipt_keys(items: list[Valid | Rejected]) -> dict[str, list[str]]:
    """Per device, the receipt keys of the events and telemetry in a committed batch.  A dead
    letter is receipted too when its key can be read (it is kept, in dead_letters): otherwise a
    vehicle waiting for receipts would send it forever."""
    out: dict[str, list[str]] = {}
    for it in items:
        if isinstance(it, Valid):
            if isinstance(it.msg, (Event, EventV2, Telemetry, TelemetryV2)):
                out.setdefault(it.device_id, []).append(receipt_key(it.msg))
            continue
        where = parse_topic(it.topic)
        if isinstance(where, str) or where[1] not in ("event", "telemetry"):
            continue
        try:
            obj = json.loads(it.payload)
        except (ValueError, RecursionError):  # a dead letter's bytes may be anything
            continue
        if not isinstance(obj, dict):
            continue
        key = f"{obj.get('event_id')}:{obj.get('phase')}" if where[1] == "event" else obj.get("msg_id")
        if isinstance(key, str) and _RECEIPT_KEY.match(key):  # only a key a vehicle can have made
            out.setdefault(where[0], []).append(key)
    return out


# What receipt_key() makes: a UUID, with ":phase" for events. A dead letter's bytes may hold
# anything else (a NUL, 200 characters), which the Receipt model would refuse.
_RECEIPT_KEY = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}(:(raised|ended|instant))?$"
)


def subscriptions(shared: bool, group: str) -> list[tuple[str, int]]:
    """Shared: the group splits events/telemetry/stats, and status is also subscribed directly,
    so every sink gets the retained status of every vehicle at start (retained messages are never
    sent to shared subscriptions); the duplicates are idempotent.  Re-subscribed at every
    connect, as a broker may have forgotten the session's subscriptions (Mosquitto forgets
    shared ones when it restarts)."""
    if shared:
        return [(f"$share/{group}/{TOPIC_ROOT}/#", 1), (f"{TOPIC_ROOT}/+/status", 1)]
    return [(f"{TOPIC_ROOT}/#", 1)]


class Metrics:
    """Ingest counters, on the sink's own registry (served at /metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("sleepsafe_sink_received", "MQTT messages received", ["kind"], registry=r)
        self.stored = Counter("sleepsafe_sink_stored", "New rows stored", ["kind"], registry=r)
        self.duplicates = Counter("sleepsafe_sink_duplicates", "Redeliveries already stored", registry=r)
        self.dead = Counter("sleepsafe_sink_dead_letters", "Messages rejected", ["code"], registry=r)
        self.db_errors = Counter("sleepsafe_sink_db_errors", "Failed batch writes (retried)", registry=r)
        self.batch = Histogram(
            "sleepsafe_sink_batch_seconds",
            "Validate + write + commit time per batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.batch_size = Histogram(
            "sleepsafe_sink_batch_messages",
            "Messages per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.queue = Gauge("sleepsafe_sink_queue_depth", "Received, not yet committed", registry=r)
        self.connected = Gauge("sleepsafe_sink_mqtt_connected", "1 while connected to the broker", registry=r)
        self.reconnects = Counter("sleepsafe_sink_mqtt_reconnects", "Reconnects to the broker", registry=r)


class Ingest:
    def __init__(self, cfg: SinkConfig, store: Store, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics or Metrics()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.committed = 0  # messages committed (valid or dead-lettered), for tests and stats
        self.totals: dict[str, int] = collections.Counter()
        # (topic, payload, mid, qos, connection generation, monotonic arrival time)
        self._q: collections.deque[tuple[str, bytes, int, int, int, float]] = collections.deque()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._generation = 0  # read and written on paho's network thread only
        self._idle = False
        self._connects = 0
        c = new_client(cfg.mqtt, cfg.mqtt.client_id, manual_ack=True)
        jitter_backoff(c, cfg.mqtt)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        self._writer = threading.Thread(target=self._run_writer, name="sink-writer", daemon=True)
        self.heartbeat = time.monotonic()  # the writer loop's last turn, idle or not
        self._batch_since: float | None = None  # arrival of the oldest message being written
        self._batch_n = 0
        self.failed: str | None = None  # why the writer died, if it did
        self.on_fatal: Any = None  # called (from the writer thread) if the writer dies
        self.clock = ClockWindow(
            timedelta(days=cfg.store.accept_past_days), timedelta(seconds=cfg.store.accept_future_s)
        )

    @property
    def queue_depth(self) -> int:
        """Received, not yet committed."""
        return len(self._q)

    def writer_turning(self, now: float | None = None) -> bool:
        """The writer is alive and its loop has turned within ``store.stall_s`` (it wakes every
        second, idle or not, and after each retry while the database is down)."""
        now = time.monotonic() if now is None else now
        return self.failed is None and now - self.heartbeat <= self.cfg.store.stall_s

    def problems(self, now: float | None = None) -> list[str]:
        """Why ingest is not working right now (empty: it is). Read by /health and by the
        systemd watchdog, so neither says ok while messages have stopped being stored."""
        now = time.monotonic() if now is None else now
        out = []
        stall = self.cfg.store.stall_s
        if self.failed is not None:
            out.append(f"writer stopped: {self.failed}")
        elif not self._writer.is_alive() and self._writer.ident is not None:
            out.append("writer stopped")
        elif not self.writer_turning(now):
            out.append(f"writer stuck for {now - self.heartbeat:.0f} s")
        # The oldest message not yet committed: in the batch being written, else in the queue.
        since, waiting = self._batch_since, self._batch_n + len(self._q)
        if since is None:
            try:
                since = self._q[0][5]
            except IndexError:  # nothing waits
                since = None
        if since is not None and now - since > stall:
            out.append(f"{waiting} messages waiting {now - since:.0f} s for a commit")
        if not self.connected.is_set():
            out.append("MQTT disconnected")
        return out

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Ingest:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.mqtt.session_expiry_s
        props.ReceiveMaximum = self.cfg.mqtt.receive_maximum
        self._writer.start()
        self.client.connect_async(
            self.cfg.mqtt.host,
            self.cfg.mqtt.port,
            keepalive=self.cfg.mqtt.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        log.info(
            "sink_mqtt_starting",
            host=self.cfg.mqtt.host,
            port=self.cfg.mqtt.port,
            client_id=self.cfg.mqtt.client_id,
            group=self.cfg.mqtt.group,
        )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Commit and acknowledge what was received, then disconnect; the session (and whatever
        the broker queues for it meanwhile) stays on the broker for the next start."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self._writer.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("sink_mqtt_connect_refused", reason=str(reason_code))
            return
        self._connects += 1
        if self._connects > 1:
            self.metrics.reconnects.inc()
        # Acks of the old connection are void: the broker redelivers those messages.
        self._generation += 1
        client.subscribe(subscriptions(self.cfg.mqtt.shared, self.cfg.mqtt.group))
        self.connected.set()
        self.metrics.connected.set(1)
        log.info("sink_mqtt_connected", session_present=bool(getattr(flags, "session_present", False)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            log.error("sink_subscribe_refused", reasons=bad)
            return
        self.subscribed.set()
        log.info("sink_subscribed", group=self.cfg.mqtt.group)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.connected.clear()
        self.metrics.connected.set(0)
        jitter_backoff(client, self.cfg.mqtt)
        if not self._stop.is_set():
            log.warning("sink_mqtt_disconnected", reason=str(reason_code))

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        # The network thread's share of the work is one append; the writer is woken only when it
        # sleeps on an empty queue (append before the check: the writer sets _idle before it
        # looks at the queue, so no message is left unnoticed).
        self._q.append((msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._generation, time.monotonic()))
        if self._idle:
            with self._cv:
                self._cv.notify()

    # ------------------------------------------------------------------ writer
    def _run_writer(self) -> None:
        """The writer, and what happens if it ever dies anyway: the reason is kept for /health
        and the service is told, so the process exits non-zero and systemd restarts it, rather
        than staying up connected while nothing is stored."""
        try:
            self._write_loop()
        except BaseException as err:  # noqa: BLE001 - whatever it was, the process must not live on
            self.failed = f"{type(err).__name__}: {str(err)[:300]}"
            log.critical("sink_writer_died", error=self.failed, queued=len(self._q))
            if self.on_fatal is not None:
                self.on_fatal(self.failed)

    def _write_loop(self) -> None:
        max_bytes = self.cfg.store.max_payload_bytes
        batch_max = self.cfg.store.batch_max
        linger = self.cfg.store.batch_linger_ms / 1000
        while True:
            with self._cv:
                self._idle = True
                # Wakes at least every second, idle or not: the heartbeat the watchdog reads.
                self._cv.wait_for(lambda: bool(self._q) or self._stop.is_set(), timeout=1.0)
                self._idle = False
            self.heartbeat = time.monotonic()
            if not self._q:
                if self._stop.is_set():
                    return
                continue
            if linger and len(self._q) < batch_max and not self._stop.is_set():
                # Group commit: a few ms of waiting turns many tiny transactions (each with its
                # own commit and device update) into one, which is what lets ingest keep up
                # under load; the broker keeps sending meanwhile.
                self._stop.wait(linger)
            n = min(len(self._q), batch_max)
            batch = [self._q.popleft() for _ in range(n)]
            self._batch_since, self._batch_n = batch[0][5], n
            self.metrics.queue.set(len(self._q))
            t0 = time.perf_counter()
            items: list[Valid | Rejected] = []
            acks: list[tuple[int, int, int]] = []
            for where, payload, mid, qos, gen, _t in batch:
                if qos:
                    acks.append((mid, qos, gen))
                if where.startswith(FLEET_PREFIX) or where.endswith((RECEIPT_SUFFIX, COMMAND_SUFFIX)):
                    continue  # to vehicles (model releases, receipts, commands), not from them
                items.append(validate(where, payload, max_bytes, self.clock))
            if not self._commit(items):
                return  # stopping with the database down: unacknowledged, so redelivered later
            self._batch_since, self._batch_n = None, 0
            if self.cfg.mqtt.receipts:
                self._send_receipts(items)
            current = self._generation
            for mid, qos, gen in acks:
                if gen == current:
                    self.client.ack(mid, qos)
            self.metrics.batch.observe(time.perf_counter() - t0)
            self.metrics.batch_size.observe(len(batch))

    def _send_receipts(self, items: list[Valid | Rejected]) -> None:
        """Tell each vehicle which of its messages are now safe here (stored, already stored, or
        kept as a dead letter), after the commit and before the PUBACKs."""
        for device, keys in receipt_keys(items).items():
            try:
                msg = Receipt(device_id=device, time=datetime.now(timezone.utc), keys=keys)
            except ValueError as err:  # never the writer's end: the vehicle resends, that is all
                log.warning("sink_receipt_skipped", device=device[:64], error=str(err)[:200])
                continue
            self.client.publish(topic(device, "receipt"), msg.model_dump_json(), qos=1)

    def _commit(self, items: list[Valid | Rejected]) -> bool:
        delay = 0.5
        while True:
            try:
                res = self.store.write_isolating(items)
                break
            except Exception as err:  # noqa: BLE001 - the database may be down: retry, never drop
                self.metrics.db_errors.inc()
                log.error("sink_write_failed", error=one_line(err), retry_in_s=delay)
                if self._stop.wait(delay):
                    log.error("sink_stopping_with_uncommitted", messages=len(items))
                    return False
                delay = min(delay * 2, 10.0)  # < stall_s: the watchdog sees the retries
            self.heartbeat = time.monotonic()  # retrying is working: the database is down
        rejected = [it for it in items if isinstance(it, Rejected)]
        for code, n in collections.Counter(it.code for it in rejected).items():
            self.metrics.dead.labels(code).inc(n)
        for kind, n in collections.Counter(it.kind for it in items if isinstance(it, Valid)).items():
            self.metrics.received.labels(kind).inc(n)
        if rejected:  # one line per batch, not per message: a flood must not flood the journal
            first = rejected[0]
            log.warning(
                "sink_dead_letters", count=len(rejected), topic=first.topic[:120], reason=first.reason[:200]
            )
        for kind, n in res.stored.items():
            if n:
                self.metrics.stored.labels(kind).inc(n)
                self.totals[kind] += n
        if res.duplicates:
            self.metrics.duplicates.inc(res.duplicates)
        self.totals["duplicates"] += res.duplicates
        self.totals["dead_letters"] += res.dead_letters
        self.committed += len(items)
        return True
