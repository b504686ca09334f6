"""Vehicle → real Mosquitto → real `sleepsafe-sink run` → database, with faults.  Every test
counts end to end: the events the edge recorded == the rows in the sink, none twice."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select

from cloud_sink import schema
from cloud_sink.store import Store
from edge_agent.config import MqttConfig
from edge_agent.outputs.spool import Spool
from edge_agent.outputs.telemetry import Publisher
from sleepsafe.protocol import (
    Event,
    FeatureSample,
    FeatureWindow,
    Telemetry,
    TelemetryV2,
    receipt_key,
    topic,
    wire_event,
)
from tests.conftest import SinkProcess, wait_until

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=timezone.utc)


def make_event(device: str, n: int) -> Event:
    return Event(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{device}/{n}"),
        device_id=device,
        type="blink" if n % 3 else "microsleep",  # type: ignore[arg-type]
        phase="instant" if n % 3 else "raised",  # type: ignore[arg-type]
        severity="info" if n % 3 else "critical",  # type: ignore[arg-type]
        state="AWAKE",  # type: ignore[arg-type]
        start_time=T0 + timedelta(milliseconds=100 * n),
        start_ms=100 * n,
        start_frame=3 * n,
        is_drowsy=False,
        perclos=0.05,
    )


def make_telemetry(device: str, n: int) -> Telemetry:
    return Telemetry(
        msg_id=uuid.uuid5(uuid.NAMESPACE_URL, f"tel/{device}/{n}"),
        device_id=device,
        time=T0 + timedelta(seconds=n),
        state="AWAKE",  # type: ignore[arg-type]
        perclos=(n % 10) / 10,
        blink_rate_per_min=14.0,
        blinks=n,
        baseline_ear=0.3,
        calibrated=True,
        is_drowsy=False,
        face=True,
    )


class Vehicle:
    """The edge agent's real publisher and spool (what the daemon uses), in this process.
    ``protocol`` (an MqttConfig key, like the rest): the schema ``events`` and ``telemetry``
    send (unset: v1, with the config's default for the rest)."""

    def __init__(self, tmp: Path, port: int, device: str, **mqtt: Any) -> None:
        self.device = device
        self.tmp = tmp
        self.spool = Spool(tmp / f"{device}.spool.sqlite3", max_rows=mqtt.pop("max_rows", 100_000))
        cfg = MqttConfig(
            enabled=True, host="127.0.0.1", port=port, reconnect_min_s=1, reconnect_max_s=2, **mqtt
        )
        self.protocol: Literal[1, 2] = mqtt.get("protocol", 1)
        self.pub = Publisher(cfg, device, self.spool)
        self.sent: set[tuple[str, str]] = set()

    def start(self) -> Vehicle:
        self.pub.start()
        return self

    def events(self, ns: range) -> None:
        for n in ns:
            e = make_event(self.device, n)
            self.pub.submit(
                "event", topic(self.device, "event"), wire_event(e, self.protocol), receipt_key(e)
            )
            self.sent.add((str(e.event_id), e.phase))

    def telemetry(self, ns: range) -> None:
        for n in ns:
            t: Telemetry | TelemetryV2 = make_telemetry(self.device, n)
            if self.protocol == 2:
                t = TelemetryV2(
                    **t.model_dump(exclude={"v"}), blink_durations_ms=[150 + n, 210, 480], long_blinks=n % 2
                )
            self.pub.submit(
                "telemetry", topic(self.device, "telemetry"), t.model_dump_json().encode(), receipt_key(t)
            )

    def dispatch(self, events: list[Event]) -> None:
        """Events as the agent hands them out (``Agent._dispatch``): it decides by the vehicle's
        config which go out (v2: blinks only with ``mqtt.blink_events``) and in which schema."""
        from edge_agent.config import EdgeConfig
        from edge_agent.daemon import Agent

        cfg = EdgeConfig(device_id=self.device, state_dir=self.tmp / self.device, mqtt=self.pub.cfg)
        agent = Agent(cfg, install_signals=False)
        agent.publisher = self.pub
        agent._dispatch(events)

    def stop(self) -> None:
        self.pub.stop()


def stored_events(url: str, device: str | None = None) -> set[tuple[str, str]]:
    store = Store(url, migrate=False)
    try:
        e = schema.events.c
        q = select(e.event_id, e.phase)
        if device:
            q = q.where(e.device_id == device)
        with store.engine.connect() as conn:
            rows = [(a, b) for a, b in conn.execute(q).all()]
        assert len(rows) == len(set(rows)), "duplicate rows"
        return set(rows)
    finally:
        store.close()


def count(url: str, table: Any, *where: Any) -> int:
    store = Store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())
    finally:
        store.close()


def sqlite_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'sink' / 'sink.sqlite3'}"


def test_broker_restart_mid_stream(broker: Any, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    sink = SinkProcess(tmp_path / "sink", broker.port, url).start()
    car = Vehicle(tmp_path, broker.port, "bus-1").start()
    try:
        car.events(range(300))
        car.telemetry(range(50))
        wait_until(lambda: count(url, schema.events) >= 100, "the first events stored")
        broker.stop()
        car.events(range(300, 600))
        car.telemetry(range(50, 100))
        broker.start()
        wait_until(
            lambda: len(stored_events(url)) >= 600,
            f"all 600 events stored (have {len(stored_events(url))}, vehicle spool {car.spool.depth()})",
            timeout=60,
        )
        wait_until(lambda: count(url, schema.telemetry) >= 100, "all telemetry stored")
        wait_until(lambda: car.spool.depth() == 0, "the vehicle's spool to drain")
        assert stored_events(url) == car.sent and len(car.sent) == 600
        assert count(url, schema.telemetry) == 100
        assert count(url, schema.dead_letters) == 0
    finally:
        car.stop()
        assert sink.stop() == 0


def test_sink_killed_and_restarted(broker: Any, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    sink = SinkProcess(tmp_path / "sink", broker.port, url).start()
    car = Vehicle(tmp_path, broker.port, "bus-2").start()
    try:
        car.events(range(2000))
        wait_until(lambda: count(url, schema.events) >= 200, "the first events stored")
        sink.kill()  # SIGKILL: whatever it received but had not committed was never acknowledged
        at_kill = count(url, schema.events)
        car.events(range(2000, 3000))
        wait_until(lambda: car.spool.depth() == 0, "the broker to take every event while the sink is down")
        sink = SinkProcess(tmp_path / "sink", broker.port, url).start()  # same client id, same session
        wait_until(lambda: count(url, schema.events) >= 3000, "all events stored after the restart", 60)
        assert stored_events(url) == car.sent and len(car.sent) == 3000
        assert at_kill < 3000
    finally:
        car.stop()
        assert sink.stop() == 0


EDGE = """
import sys, threading, uuid
from pathlib import Path
from edge_agent.config import MqttConfig
from sleepsafe.logs import configure_logging
from sleepsafe.protocol import topic
from edge_agent.outputs.spool import Spool
from edge_agent.outputs.telemetry import Publisher
from tests.test_sink_e2e import make_event
configure_logging("warning", "json")
spool = Spool(Path(sys.argv[1]))
pub = Publisher(MqttConfig(enabled=True, host="127.0.0.1", port=int(sys.argv[2]), inflight=8), "bus-3", spool)
if sys.argv[3] == "record":
    for n in range(int(sys.argv[4])):
        pub.submit("event", topic("bus-3", "event"), make_event("bus-3", n).model_dump_json().encode())
pub.start()
print("started", flush=True)
threading.Event().wait(600)
"""


def test_edge_sigkilled_and_restarted(broker: Any, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    sink = SinkProcess(tmp_path / "sink", broker.port, url).start()
    spool = tmp_path / "edge.sqlite3"
    n = 3000
    cmd = [sys.executable, "-c", EDGE, str(spool), str(broker.port)]
    edge = subprocess.Popen([*cmd, "record", str(n)], stdout=subprocess.PIPE, text=True)
    try:
        assert edge.stdout is not None and edge.stdout.readline().strip() == "started"
        wait_until(lambda: count(url, schema.events) >= 50, "the first events stored")
        edge.send_signal(signal.SIGKILL)
        edge.wait(timeout=10)
        at_kill = count(url, schema.events)
        left = Spool(spool)
        recorded_left = left.depth()
        left.close()
        # Restarted with the same spool (and nothing new to record): it delivers the rest.
        edge = subprocess.Popen([*cmd, "resume", "0"], stdout=subprocess.PIPE, text=True)
        wait_until(lambda: count(url, schema.events) >= n, f"all {n} events stored", timeout=60)
        expected = {(str(make_event("bus-3", i).event_id), make_event("bus-3", i).phase) for i in range(n)}
        assert stored_events(url) == expected
        assert at_kill < n and recorded_left > 0, (at_kill, recorded_left)
    finally:
        edge.kill()
        edge.wait()
        assert sink.stop() == 0


def test_spool_full_evicts_telemetry_first_and_counts_it(broker: Any, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    sink = SinkProcess(tmp_path / "sink", broker.port, url).start()
    broker.stop()  # the vehicle is out of coverage
    car = Vehicle(tmp_path, broker.port, "bus-4", max_rows=50).start()
    try:
        car.telemetry(range(100))
        car.events(range(30))
        wait_until(lambda: car.spool.depth() + sum(car.spool.evicted().values()) == 130, "all 130 spooled")
        evicted = car.spool.evicted()
        assert evicted == {"telemetry": 80, "event": 0}
        broker.start()
        wait_until(lambda: car.spool.depth() == 0, "the spool to drain", timeout=60)
        wait_until(lambda: count(url, schema.telemetry) + count(url, schema.events) >= 50, "rows stored")
        assert stored_events(url) == car.sent and len(car.sent) == 30
        assert count(url, schema.telemetry) == 100 - evicted["telemetry"]
    finally:
        car.stop()
        assert sink.stop() == 0


def malformed(i: int) -> tuple[str, bytes]:
    """1,000 distinct bad messages of every kind the sink must survive."""
    good = make_event("bus-5", 10_000 + i).model_dump_json()
    kinds: list[tuple[str, bytes]] = [
        ("sleepsafe/v1/bus-5/event", f"{{not json {i}".encode()),
        ("sleepsafe/v1/bus-5/event", good.replace('"v":1', '"v":7').encode()),
        ("sleepsafe/v1/bus-5/event", good.replace('"is_drowsy":false', f'"is_drowsy":"x{i}"').encode()),
        ("sleepsafe/v1/bus-5/event", (good + " " * 300_000).encode()),
        ("sleepsafe/v1/bus-6/event", good.encode()),  # device id in payload differs from topic
        ("sleepsafe/v1/bus-5/bogus", good.encode()),
        ("sleepsafe/v1/bus-5/telemetry", bytes([0xFF, 0xFE, i % 256, i // 256])),
        ("sleepsafe/v1/bus-5/status", json.dumps({"v": 1, "device_id": "bus-5", "n": i}).encode()),
    ]
    return kinds[i % len(kinds)]


def test_thousand_malformed_messages_mixed_into_good_traffic(broker: Any, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    url = sqlite_url(tmp_path)
    sink = SinkProcess(tmp_path / "sink", broker.port, url).start()
    rogue = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rogue", protocol=mqtt.MQTTv5)
    rogue.connect("127.0.0.1", broker.port)
    rogue.loop_start()
    car = Vehicle(tmp_path, broker.port, "bus-5").start()
    try:
        infos = []
        for i in range(1000):
            car.events(range(i, i + 1))
            t, p = malformed(i)
            infos.append(rogue.publish(t, p, qos=1))
        for info in infos:
            info.wait_for_publish(30)
        wait_until(lambda: len(stored_events(url, "bus-5")) >= 1000, "the good events stored", 60)
        wait_until(lambda: count(url, schema.dead_letters) >= 1000, "1000 dead letters", 60)
        assert stored_events(url) == car.sent and len(car.sent) == 1000
        assert count(url, schema.dead_letters) == 1000
        # The sink is alive and says why each was refused.
        stats = sink.api("/statistics")
        reasons = " ".join(r["reason"] for r in stats["dead_letter_reasons"])
        for words in (
            "bad JSON",
            "unknown schema version 7",
            "is_drowsy",
            "oversized",
            "differs",
            "unknown message kind",
        ):
            assert words in reasons, words
        assert sink.api("/health")["status"] == "ok"
    finally:
        car.stop()
        rogue.loop_stop()
        rogue.disconnect()
        assert sink.stop() == 0


def test_two_sinks_share_one_broker_on_postgresql(broker: Any, postgres: Any, tmp_path: Path) -> None:
    url = postgres.new_database()
    Store(url).close()  # migrate once before two processes start
    a = SinkProcess(tmp_path / "a", broker.port, url, client_id="sink-a", **{"mqtt.shared": "true"}).start()
    b = SinkProcess(tmp_path / "b", broker.port, url, client_id="sink-b", **{"mqtt.shared": "true"}).start()
    cars = [Vehicle(tmp_path, broker.port, f"bus-{10 + i}").start() for i in range(3)]
    try:
        for car in cars:
            car.events(range(1000))
        wait_until(lambda: count(url, schema.events) >= 3000, "3000 events stored", 60)
        assert stored_events(url) == set().union(*(c.sent for c in cars))
    finally:
        for car in cars:
            car.stop()
        assert a.stop() == 0 and b.stop() == 0
    share = [p.final().get("totals", {}).get("event", 0) for p in (a, b)]
    assert sum(share) == 3000 and min(share) > 0, share  # both took part, nothing twice


def test_mosquitto_forgets_shared_subscriptions_across_its_restart(broker: Any) -> None:
    """Why `mqtt.shared` is off by default (docs/sink.md): a plain persistent subscription keeps
    queueing across a Mosquitto restart, a shared one does not.  If this starts failing, the
    broker got better and the default can change."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    def session(cid: str, filt: str | None, got: list[bytes]) -> Any:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        ready = threading.Event()
        c.on_subscribe = lambda *a: ready.set()
        c.on_connect = lambda cl, *a: cl.subscribe(filt, qos=1) if filt else ready.set()
        c.on_message = lambda cl, u, m: got.append(bytes(m.payload))
        c.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        c.loop_start()
        assert ready.wait(10)
        return c

    plain: list[bytes] = []
    shared: list[bytes] = []
    for cid, filt, got in (("plain", "t/#", plain), ("shared", "$share/g/t/#", shared)):
        c = session(cid, filt, got)
        c.loop_stop()
        c.disconnect()
    broker.stop()
    broker.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    pub.publish("t/x", b"while the subscribers were away", qos=1).wait_for_publish(10)
    clients = [session("plain", None, plain), session("shared", None, shared)]
    wait_until(lambda: len(plain) == 1, "the plain session's queued message")
    # The plain session got its message; give the shared one the same chance (one round trip).
    pub.publish("t/y", b"marker", qos=1).wait_for_publish(10)
    assert shared == [], "Mosquitto now keeps shared subscriptions: revisit mqtt.shared's default"
    for c in [*clients, pub]:
        c.loop_stop()
        c.disconnect()


def test_database_down_mid_stream_loses_nothing(broker: Any, tmp_path: Path) -> None:
    """PostgreSQL stopped under load: the sink keeps retrying the batch it holds, acknowledges
    nothing meanwhile (so the broker keeps the rest), and stores everything once it is back."""
    from tests.conftest import Postgres

    pg = Postgres()
    pg.start()
    try:
        url = pg.new_database()
        sink = SinkProcess(tmp_path / "sink", broker.port, url).start()
        car = Vehicle(tmp_path, broker.port, "bus-7").start()
        try:
            car.events(range(500))
            wait_until(lambda: count(url, schema.events) >= 100, "the first events stored")
            pg.stop()
            car.events(range(500, 1500))
            wait_until(lambda: car.spool.depth() == 0, "the broker to take every event")
            wait_until(
                lambda: any(r.get("event") == "sink_write_failed" for r in sink.log),
                "the sink to see the outage",
            )
            assert sink.proc.poll() is None, "the sink must not exit while its database is down"
            import httpx

            health = httpx.get(f"http://127.0.0.1:{sink.port}/health", timeout=30)
            assert health.status_code == 503 and health.json()["database"] == "unreachable"
            pg.start()
            wait_until(lambda: count(url, schema.events) >= 1500, "all 1500 events stored", timeout=90)
            assert stored_events(url) == car.sent and len(car.sent) == 1500
        finally:
            car.stop()
            assert sink.stop() == 0
    finally:
        pg.stop()


def test_receipts_make_shared_sinks_safe_across_a_broker_restart(broker: Any, tmp_path: Path) -> None:
    """End-to-end delivery: two sinks in a shared group (which Mosquitto forgets when it
    restarts) and vehicles that keep every row until the sink's receipt.  Whatever the broker
    drops is sent again; the rows stored are exactly the events recorded."""
    url = sqlite_url(tmp_path)
    Store(url).close()
    shared = {"mqtt.shared": "true"}
    a = SinkProcess(tmp_path / "sink", broker.port, url, client_id="sink-a", **shared).start()
    b = SinkProcess(tmp_path / "sink-b", broker.port, url, client_id="sink-b", **shared).start()
    cars = [
        Vehicle(tmp_path, broker.port, f"bus-{20 + i}", await_receipt=True, receipt_timeout_s=3).start()
        for i in range(2)
    ]
    try:
        for car in cars:
            car.events(range(400))
        wait_until(lambda: count(url, schema.events) >= 200, "the first events stored")
        broker.stop()
        for car in cars:
            car.events(range(400, 1000))
            car.telemetry(range(50))
        broker.start()
        want = set().union(*(c.sent for c in cars))
        wait_until(lambda: stored_events(url) >= want, "all 2000 events stored", timeout=90)
        # Every row leaves a vehicle only on its receipt.
        wait_until(lambda: all(c.spool.depth() == 0 for c in cars), "the spools to empty on receipts", 60)
        assert stored_events(url) == want and len(want) == 2000
        assert count(url, schema.telemetry) == 100
        assert sum(c.pub.receipts for c in cars) >= 2100
    finally:
        for car in cars:
            car.stop()
        assert a.stop() == 0 and b.stop() == 0


def _pki(d: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    d.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=sleepsafe-test-ca")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")  # fmt: skip
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip


def test_mutual_tls_and_passwords_from_credentials_end_to_end(tmp_path: Path, monkeypatch: Any) -> None:
    """The broker as production runs it: TLS only, client certificates required, no anonymous
    clients.  Vehicle and sink read their passwords from $CREDENTIALS_DIRECTORY (systemd's
    LoadCredential=); a sink with a wrong password is refused and keeps running."""
    import shutil

    from tests.conftest import Mosquitto

    if shutil.which("openssl") is None:
        import pytest

        pytest.skip("openssl is not installed")
    pki = tmp_path / "pki"
    _pki(pki)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pki / "passwd"), "fleet", "s3cret"], check=True)
    tls = (
        f"cafile {pki}/ca.crt\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
        "require_certificate true\n"
    )
    broker = Mosquitto(
        tmp_path / "broker", listener_extra=tls, auth=f"allow_anonymous false\npassword_file {pki}/passwd\n"
    )
    broker.start()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    files = {"ca_file": pki / "ca.crt", "cert_file": pki / "client.crt", "key_file": pki / "client.key"}
    sets = {f"mqtt.{k}": str(v) for k, v in files.items()} | {"mqtt.username": "fleet"}
    url = sqlite_url(tmp_path)
    sink = SinkProcess(tmp_path / "sink", broker.port, url, **sets).start()
    bad_url = f"sqlite:///{tmp_path / 'bad.sqlite3'}"
    bad = SinkProcess(
        tmp_path / "bad", broker.port, bad_url, client_id="sink-bad", **sets | {"mqtt.password": "wrong"}
    )
    car = Vehicle(tmp_path, broker.port, "bus-30", username="fleet", **files).start()
    try:
        car.events(range(50))
        wait_until(lambda: len(stored_events(url)) >= 50, "50 events over mutual TLS")
        assert stored_events(url) == car.sent
        # The wrong password: refused by the broker, said in one log line, the process lives on.
        bad.start(until=frozenset({"sink_api_listening", "sink_mqtt_connect_refused"}))
        assert any(r.get("event") == "sink_mqtt_connect_refused" for r in bad.log), bad.log[-3:]
        assert bad.proc.poll() is None
    finally:
        car.stop()
        assert sink.stop() == 0
        if bad.proc is not None:
            bad.stop()
        broker.stop()


def windowed_events(device: str, n: int) -> list[Event]:
    """Blinks and microsleeps (raised, then ended) as the detector makes them, each with a 48-frame
    window (a dropped frame and a faceless stretch in it)."""
    out: list[Event] = []
    for i in range(n):
        e = make_event(device, i)
        frames = [f for f in range(49) if f != 20]
        window = [
            FeatureSample(
                t_ms=e.start_ms + 42 * f,
                frame=e.start_frame + f,
                face=not 30 <= f < 34,
                ear=0.0 if 30 <= f < 34 else round(0.29 - 0.002 * (f % 7), 4),
                ear_left=0.2871,
                ear_right=0.3012,
                openness=round(0.97 - 0.01 * (f % 5), 3),
                mar=0.1234,
                yaw=round(-3.5 + 0.1 * f, 1),
                pitch=-8.2,
                roll=1.4,
                iris_vis=0.812,
            )
            for f in frames
        ]
        e = e.model_copy(update={"features": window})
        if e.type.value == "blink":
            e = e.model_copy(update={"end_ms": e.start_ms + 180, "duration_ms": 180})
        out.append(e)
        if e.phase == "raised":
            out.append(
                e.model_copy(
                    update={
                        "phase": "ended",
                        "end_ms": e.start_ms + 2600,
                        "duration_ms": 2600,
                        "features": window[-40:],
                    }
                )
            )
    return out


def test_mixed_v1_and_v2_fleet_into_one_sink(broker: Any, tmp_path: Path) -> None:
    """A fleet half upgraded: a v1 vehicle, a v2 vehicle (blinks ride in its telemetry) and a v2
    vehicle collecting training data (``mqtt.blink_events``), one real sink.  Every event each
    sends is stored once (some sent twice, as at-least-once allows), telemetry of both versions
    is stored, and the windows are stored in one shape whatever the version."""
    import httpx

    url = sqlite_url(tmp_path)
    sink = SinkProcess(tmp_path / "sink", broker.port, url).start()
    cars = {
        "bus-old": Vehicle(tmp_path, broker.port, "bus-old", protocol=1).start(),
        "bus-new": Vehicle(tmp_path, broker.port, "bus-new", protocol=2).start(),
        "bus-lab": Vehicle(tmp_path, broker.port, "bus-lab", protocol=2, blink_events=True).start(),
    }
    events = {d: windowed_events(d, 60) for d in cars}
    want = {
        d: {
            (str(e.event_id), e.phase)
            for e in evs
            if d != "bus-new" or e.type.value != "blink"  # v2 sends blinks only when asked
        }
        for d, evs in events.items()
    }
    try:
        for d, car in cars.items():
            car.dispatch(events[d])
            car.dispatch(events[d][:10])  # sent again (a resend after a crash): stored once
            car.telemetry(range(20))
            car.telemetry(range(5))  # again: stored once

        def all_in(d: str) -> bool:
            tel = count(url, schema.telemetry, schema.telemetry.c.device_id == d)
            return cars[d].spool.depth() == 0 and tel >= 20 and stored_events(url, d) >= want[d]

        for d in cars:
            wait_until(functools.partial(all_in, d), f"{d}'s {len(want[d])} events and 20 telemetry stored")
        for d in cars:
            assert stored_events(url, d) == want[d], d  # exactly these, none twice
        assert len(want["bus-old"]) == len(want["bus-lab"]) == 80 and len(want["bus-new"]) == 40
        assert count(url, schema.dead_letters) == 0

        store = Store(url, migrate=False)
        try:
            e, t = schema.events.c, schema.telemetry.c
            with store.engine.connect() as conn:
                rows = conn.execute(select(e.device_id, e.event_id, e.phase, e.protocol, e.features)).all()
                tel = conn.execute(select(t.device_id, t.protocol, t.blink_durations_ms, t.long_blinks)).all()
        finally:
            store.close()
        assert {(d, p) for d, _, _, p, _ in rows} == {("bus-old", 1), ("bus-new", 2), ("bus-lab", 2)}
        sent = {(str(ev.event_id), ev.phase): ev for evs in events.values() for ev in evs}
        shapes = set()
        for _, event_id, phase, _, features in rows:
            assert isinstance(features, dict), features  # columns, not a list of frames
            shapes.add(tuple(sorted(features)))
            # The stored columns are the frames the vehicle had, whichever schema it sent.
            assert FeatureWindow.model_validate(features).samples() == sent[(event_id, phase)].features
        # Every column, but the models' outputs: these vehicles ran none, so they are left out.
        from sleepsafe.protocol import MODEL_COLUMNS

        assert shapes == {tuple(sorted(set(FeatureWindow.model_fields) - set(MODEL_COLUMNS)))}

        # The same windows from a v1 and a v2 vehicle are stored alike.
        def windows(device: str) -> list[str]:
            return sorted(json.dumps(f, sort_keys=True) for d, _, _, _, f in rows if d == device)

        assert windows("bus-old") == windows("bus-lab")

        assert len(tel) == 60 and {d for d, *_ in tel} == set(cars)
        for d, protocol, durations, long_blinks in tel:
            if d == "bus-old":
                assert (protocol, durations, long_blinks) == (1, None, None)
            else:
                assert protocol == 2 and durations[1:] == [210, 480] and long_blinks in (0, 1), (d, durations)

        health = httpx.get(f"http://127.0.0.1:{sink.port}/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert {x["device_id"] for x in sink.api("/devices")} >= set(cars)
    finally:
        for car in cars.values():
            car.stop()
        assert sink.stop() == 0
