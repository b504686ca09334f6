"""MQTT publishing that never loses a message: everything QoS 1 goes through the spool first.

A writer thread moves messages from the frame loop's in-memory inbox into the spool (one
transaction per batch), a pump thread publishes the oldest spooled rows while connected, keeping
at most ``inflight`` awaiting PUBACK, and each PUBACK deletes its row.  After a reconnect the pump
starts again from the oldest unacknowledged row, so delivery is at least once and in order; the
sink stores idempotently by message id.  Nothing here ever blocks the frame loop: ``submit`` is
an in-memory queue put.

Status (retained): ``online`` on every connect, the Last Will ``offline``, ``stopped`` on a clean
exit, each with a persistent session sequence number.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import datetime, timezone
from typing import Any

import structlog

from edge_agent.config import MqttConfig
from edge_agent.outputs.spool import Spool
from sleepsafe import __version__
from sleepsafe.mqtt import jitter_backoff, new_client
from sleepsafe.protocol import Command, Receipt, Status, topic

log = structlog.get_logger(__name__)

# An operator's command older than this (or retained) is stale: the alert it meant has passed.
COMMAND_MAX_AGE_S = 30.0


def next_backoff(current: int, receipts_since: bool) -> int:
    """Resend rounds with no receipt in between double the wait (up to 16 × receipt_timeout_s);
    any receipt means a sink is back, and the wait returns to one timeout."""
    return 1 if receipts_since else min(current * 2, MAX_RECEIPT_BACKOFF)


MAX_RECEIPT_BACKOFF = 16


class Publisher:
    def __init__(self, cfg: MqttConfig, device_id: str, spool: Spool) -> None:
        import paho.mqtt.client as mqtt

        self.cfg = cfg
        self.device_id = device_id
        self.spool = spool
        self.seq = spool.next_seq()
        self.connected = threading.Event()
        self.reconnects = 0
        self.connects = 0
        self.published = 0
        self.acked = 0
        self._inbox: queue.Queue[tuple[str, str, bytes, str | None] | None] = queue.Queue()
        self.receipts = 0  # rows confirmed by the sink's receipts
        self.resent = 0  # rows sent again for want of a receipt
        self.receipt_backoff = 1  # multiplier of receipt_timeout_s (see next_backoff)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # mid -> spool row id
        self._last_sent = 0
        self._generation = 0  # +1 per connect: a pump pass begun before a reconnect records nothing
        self._mqtt = mqtt
        c = new_client(cfg, device_id)
        c.will_set(topic(device_id, "status"), self._status("offline"), qos=1, retain=True)
        c.max_inflight_messages_set(cfg.inflight)
        jitter_backoff(c, cfg)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.on_command: Any = None  # called with each valid Command (from paho's thread)
        self.subscribed = threading.Event()  # the broker confirmed this connection's subscriptions
        c.on_subscribe = lambda *_a: self.subscribed.set()
        self.client = c
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
        self._pump = threading.Thread(target=self._pump_loop, name="mqtt-pump", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Publisher:
        self._writer.start()
        self._pump.start()
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        log.info(
            "mqtt_starting", host=self.cfg.host, port=self.cfg.port, client_id=self.device_id, seq=self.seq
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Flush the inbox to the spool, say ``stopped`` (retained) if connected, disconnect
        cleanly (no Last Will).  Whatever is not acknowledged stays in the spool for next time."""
        self._inbox.put(None)
        self._writer.join(timeout=timeout)
        # Give what is spooled a chance to leave now (within the unit's stop timeout); what
        # does not make it stays in the spool for the next start.
        deadline = threading.Event()
        waited = 0.0
        while self.connected.is_set() and self.spool.depth() > 0 and waited < self.cfg.drain_timeout_s:
            deadline.wait(0.05)
            waited += 0.05
        self._stop.set()
        self._wake.set()
        self._pump.join(timeout=timeout)
        if self.connected.is_set():
            info = self.client.publish(
                topic(self.device_id, "status"), self._status("stopped"), qos=1, retain=True
            )
            info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def submit(self, kind: str, topic_: str, payload: bytes, key: str | None = None) -> None:
        """Queue one QoS 1 message (event or telemetry); never blocks.  ``key`` is its
        :func:`~sleepsafe.protocol.receipt_key`, for end-to-end receipts."""
        self._inbox.put((kind, topic_, payload, key))

    def publish_now(self, topic_: str, payload: bytes) -> bool:
        """QoS 0, not spooled (stats): sent if connected, dropped otherwise."""
        if not self.connected.is_set():
            return False
        self.client.publish(topic_, payload, qos=0)
        return True

    # ------------------------------------------------------------------ threads
    def _write_loop(self) -> None:
        while True:
            item = self._inbox.get()
            batch = [] if item is None else [item]
            done = item is None
            while not done:
                try:
                    nxt = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    done = True
                else:
                    batch.append(nxt)
            if batch:
                try:
                    self.spool.put_many(batch)
                except Exception as err:  # noqa: BLE001 - a full disk must not stop the agent
                    log.error("spool_write_failed", error=str(err), lost=len(batch))
                self._wake.set()
            if done:
                return

    def _pump_loop(self) -> None:
        next_requeue = time.monotonic()
        receipts_seen = self.receipts
        while not self._stop.is_set():
            if self.cfg.await_receipt and time.monotonic() >= next_requeue:
                timeout = self.cfg.receipt_timeout_s * self.receipt_backoff
                next_requeue = time.monotonic() + timeout / 4
                n = self.spool.requeue(timeout)
                if n:
                    self.resent += n
                    # No sink answering (down, or none that sends receipts): wait longer before
                    # the next round, so a fleet does not flood the broker with its backlog.
                    self.receipt_backoff = next_backoff(self.receipt_backoff, self.receipts > receipts_seen)
                    receipts_seen = self.receipts
                    log.warning(
                        "mqtt_no_receipt_resending",
                        rows=n,
                        timeout_s=timeout,
                        next_backoff=self.receipt_backoff,
                    )
                    with self._lock:  # start again from the oldest row in line
                        self._generation += 1
                        self._inflight.clear()
                        self._last_sent = 0
            if not self.connected.wait(0.2):
                continue
            with self._lock:
                room = self.cfg.inflight - len(self._inflight)
                after = self._last_sent
                generation = self._generation
            sent = 0
            if room > 0:
                for row in self.spool.peek(room, after_id=after):
                    if not self.connected.is_set():
                        break
                    info = self.client.publish(row.topic, row.payload, qos=1)
                    if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                        break
                    with self._lock:
                        if self._generation != generation:
                            # Reconnected meanwhile: the new session starts again from the oldest
                            # unacknowledged row; recording this one would skip rows before it.
                            break
                        self._inflight[info.mid] = row.id
                        self._last_sent = row.id
                    self.published += 1
                    sent += 1
            if sent == 0:
                self._wake.wait(0.2)
                self._wake.clear()

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("mqtt_connect_refused", reason=str(reason_code))
            return
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        with self._lock:
            # Start again from the oldest row not acknowledged: at least once, in order.
            self._generation += 1
            self._inflight.clear()
            self._last_sent = 0
        if self.cfg.await_receipt:
            client.subscribe(topic(self.device_id, "receipt"), qos=1)
        if self.on_command is not None:
            client.subscribe(topic(self.device_id, "command"), qos=1)
        client.publish(topic(self.device_id, "status"), self._status("online"), qos=1, retain=True)
        self.connected.set()
        self._wake.set()
        log.info("mqtt_connected", host=self.cfg.host, port=self.cfg.port, spool_depth=self.spool.depth())

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        jitter_backoff(client, self.cfg)
        if was and not self._stop.is_set():
            log.warning("mqtt_disconnected", reason=str(reason_code), spool_depth=self.spool.depth())

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            row = self._inflight.pop(mid, None)
        if row is not None:
            if not (self.cfg.await_receipt and self.spool.mark_sent(row)):
                self.spool.ack(row)
            self.acked += 1
            self._wake.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.endswith("/command"):
            self._on_command(msg)
        else:
            self._on_receipt(client, userdata, msg)

    def _on_command(self, msg: Any) -> None:
        try:
            cmd = Command.model_validate_json(msg.payload)
        except ValueError as err:
            log.warning("mqtt_bad_command", topic=msg.topic, error=str(err).splitlines()[0][:200])
            return
        age = (datetime.now(timezone.utc) - cmd.time).total_seconds()
        if msg.retain or not -COMMAND_MAX_AGE_S < age < COMMAND_MAX_AGE_S:
            # A retained or late ack would acknowledge whatever alert happens to be up now.
            log.warning(
                "mqtt_stale_command", command=cmd.command, retained=bool(msg.retain), age_s=round(age, 1)
            )
            return
        log.info("mqtt_command", command=cmd.command)
        if self.on_command is not None:
            self.on_command(cmd)

    def _on_receipt(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            r = Receipt.model_validate_json(msg.payload)
        except ValueError as err:
            log.warning("mqtt_bad_receipt", topic=msg.topic, error=str(err).splitlines()[0][:200])
            return
        if r.device_id == self.device_id:
            self.receipts += self.spool.receipt(r.keys)
            self.receipt_backoff = 1  # a sink answers: overdue rows go again after one timeout

    # ------------------------------------------------------------------ helpers
    def _status(self, state: str) -> bytes:
        return (
            Status(
                v=self.cfg.protocol,
                device_id=self.device_id,
                state=state,  # type: ignore[arg-type]
                seq=self.seq,
                time=datetime.now(timezone.utc),
                version=__version__,
            )
            .model_dump_json()
            .encode()
        )
