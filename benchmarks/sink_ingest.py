"""Sink ingest throughput and latency, against baselines measured in the same run.

Several publisher processes (simulated vehicles, paho 2 / MQTT 5, QoS 1) push events shaped
like the agent's (48-frame feature window by default) through a real Mosquitto to:

  (a) bare        a paho subscriber that only counts messages: the ceiling on this box
  (b) sqlite      the real sink (`sleepsafe-sink run`, validation on) into SQLite
  (c) postgresql  the real sink into a real PostgreSQL (fsync on, as in production)
  (d) naive       a sink that validates and commits every message with SQLite defaults

Events/s is messages / (last one stored - first one published); p99 is stored_at - the event's
own time, per row.  Goal: sqlite/bare >= 0.8 and sqlite/naive >= 10.  ``cpu_us_per_event`` is
the consumer process's own CPU time per message: the publishers and the broker share the same
cores, so a consumer that costs more CPU per message leaves them less.

    python benchmarks/sink_ingest.py [--events 30000] [--publishers 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sleepsafe.protocol import Event, FeatureSample, wire_event  # noqa: E402

ZERO_ID = "00000000-0000-0000-0000-000000000000"
ZERO_T = "2000-01-01T00:00:00Z"


PROTOCOL = int(os.environ.get("SLEEPSAFE_BENCH_PROTOCOL", "2"))  # set by --protocol, for the publishers


def template(device: str, features: int) -> bytes:
    """An alert record as a vehicle sends it (protocol v2 by default: the window as columns)."""
    e = Event(
        event_id=uuid.UUID(ZERO_ID),
        device_id=device,
        type="microsleep",  # type: ignore[arg-type]
        phase="ended",
        severity="critical",  # type: ignore[arg-type]
        state="AWAKE",  # type: ignore[arg-type]
        start_time=datetime(2000, 1, 1, tzinfo=timezone.utc),
        start_ms=1000,
        start_frame=30,
        end_ms=1200,
        end_frame=36,
        duration_ms=200,
        ear_value=0.12,
        openness=0.4,
        is_drowsy=False,
        perclos=0.08,
        model_versions={"landmarks": "mediapipe-0.10.21"},
        features=[
            FeatureSample(
                t_ms=33 * i,
                frame=i,
                face=True,
                ear=0.28,
                ear_left=0.29,
                ear_right=0.27,
                openness=0.93,
                mar=0.1,
                yaw=2.5,
                pitch=-4.0,
                roll=1.0,
                iris_vis=0.9,
            )
            for i in range(features)
        ],
    )
    return wire_event(e, 2 if PROTOCOL == 2 else 1).replace(b"2000-01-01T00:00:00Z", ZERO_T.encode())


def _publisher(port: int, device: str, n: int, features: int, go: Any, rate: float = 0.0) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    tpl = template(device, features)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    topic = f"sleepsafe/v1/{device}/event"
    go.wait()
    infos = []
    t_start = time.perf_counter()
    for i in range(n):
        if rate:  # paced: a steady fleet rather than a burst
            delay = t_start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        payload = tpl.replace(ZERO_ID.encode(), str(uuid.uuid4()).encode()).replace(
            ZERO_T.encode(), now.encode()
        )
        infos.append(c.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(120)
    c.loop_stop()
    c.disconnect()


def publish(
    port: int, total: int, publishers: int, features: int, tag: str, rate: float = 0.0
) -> tuple[float, list[Any]]:
    """Start the publisher processes (``rate``: events/s in all, 0 = as fast as they can);
    returns (start time, processes)."""
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    procs = [
        ctx.Process(
            target=_publisher, args=(port, f"{tag}-{i}", total // publishers, features, go, rate / publishers)
        )
        for i in range(publishers)
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let them connect (setup, not measured)
    t0 = time.time()
    go.set()
    return t0, procs


def _wait_count(count: Any, n: int, timeout: float = 600) -> float:
    deadline = time.time() + timeout
    last = -1
    while time.time() < deadline:
        c = count()
        if c >= n:
            return time.time()
        if c != last:
            last = c
        threading.Event().wait(0.02)
    raise TimeoutError(f"only {last} of {n} arrived")


# ----------------------------------------------------------------------------- consumers


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) a process has used: this one, or ``pid``'s."""
    if pid is None:
        return sum(os.times()[:2])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def progress(what: str) -> None:
    print(f"[sink_ingest] {what} ...", file=sys.stderr, flush=True)


def run_bare(port: int, total: int, publishers: int, features: int) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got = [0]
    last = [0.0]

    def on_message(c: Any, u: Any, m: Any) -> None:
        got[0] += 1
        last[0] = time.time()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare", protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = 1000
    sub = threading.Event()
    c.on_connect = lambda cl, *a: cl.subscribe("sleepsafe/v1/+/event", qos=1)
    c.on_subscribe = lambda *a: sub.set()
    c.on_message = on_message
    c.connect("127.0.0.1", port, properties=props)
    c.loop_start()
    sub.wait(10)
    c0 = cpu_s()
    t0, procs = publish(port, total, publishers, features, "bare")
    _wait_count(lambda: got[0], total)
    cpu = cpu_s() - c0
    for p in procs:
        p.join()
    c.loop_stop()
    c.disconnect()
    return {
        "events": got[0],
        "events_per_s": round(got[0] / (last[0] - t0), 1),
        "cpu_us_per_event": round(cpu / got[0] * 1e6, 1),
    }


def run_sink(
    port: int, url: str, total: int, publishers: int, features: int, tag: str, rate: float = 0.0
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from cloud_sink import schema
    from cloud_sink.store import Store

    workdir = Path(tempfile.mkdtemp(prefix=f"sink-{tag}-"))
    sets = {
        "state_dir": str(workdir),
        "store.url": url,
        "mqtt.host": "127.0.0.1",
        "mqtt.port": str(port),
        "mqtt.client_id": f"bench-{tag}",
        "api.enabled": "false",
        "logging.level": "info",
        "logging.format": "json",
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_sink.cli", *args, "run"], stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"sink_subscribed"' in line:
            break
    else:
        raise RuntimeError(f"sink did not start: exit {proc.wait()}")
    threading.Thread(target=lambda s=proc.stderr: [None for _ in s], daemon=True).start()
    store = Store(url, migrate=False)
    e = schema.events.c

    def count() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.events)).scalar_one())

    c0 = cpu_s(proc.pid)
    t0, procs = publish(port, total, publishers, features, tag, rate)
    t_end = _wait_count(count, total)
    cpu = cpu_s(proc.pid) - c0
    for p in procs:
        p.join()
    with store.engine.connect() as conn:
        lat = sorted(
            (s - st).total_seconds() * 1000 for s, st in conn.execute(select(e.stored_at, e.start_time)).all()
        )
    proc.terminate()
    proc.wait(30)
    store.close()
    n = count_rows = len(lat)
    return {
        "events": count_rows,
        "events_per_s": round(n / (t_end - t0), 1),
        "p50_ms": round(lat[n // 2], 1),
        "p99_ms": round(lat[min(n - 1, int(n * 0.99))], 1),
        "cpu_us_per_event": round(cpu / n * 1e6, 1),
    }


NAIVE = r"""
import json, sqlite3, sys, threading, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sleepsafe.protocol import Event, EventV2
db = sqlite3.connect(sys.argv[2])  # SQLite defaults: rollback journal, synchronous=FULL
db.execute("CREATE TABLE events (event_id TEXT, device_id TEXT, type TEXT, start_time TEXT, body TEXT)")
db.commit()
def on_message(c, u, m):
    e = (EventV2 if b'"v":2,' in m.payload else Event).model_validate_json(m.payload)
    db.execute("INSERT INTO events VALUES (?,?,?,?,?)",
               (str(e.event_id), e.device_id, e.type.value, e.start_time.isoformat(), m.payload.decode()))
    db.commit()
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="naive", protocol=mqtt.MQTTv5)
props = Properties(PacketTypes.CONNECT); props.ReceiveMaximum = 1000
c.on_connect = lambda cl, *a: cl.subscribe("sleepsafe/v1/+/event", qos=1)
c.on_subscribe = lambda *a: print("subscribed", flush=True)
c.on_message = on_message
c.connect("127.0.0.1", int(sys.argv[1]), properties=props)
c.loop_forever()
"""


def run_naive(port: int, total: int, publishers: int, features: int) -> dict[str, Any]:
    import sqlite3

    path = Path(tempfile.mkdtemp(prefix="naive-")) / "naive.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", NAIVE, str(port), str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "subscribed"

    def count() -> int:
        try:
            with sqlite3.connect(path, timeout=5) as db:
                return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.OperationalError:
            return 0

    t0, procs = publish(port, total, publishers, features, "naive")
    t_end = _wait_count(count, total)
    for p in procs:
        p.join()
    proc.terminate()
    proc.wait(10)
    return {"events": total, "events_per_s": round(total / (t_end - t0), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30_000, help="events per run (bare, sqlite, postgresql)")
    ap.add_argument("--naive-events", type=int, default=3_000, help="events for the slow naive sink")
    ap.add_argument("--publishers", type=int, default=3)
    ap.add_argument("--features", type=int, default=48, help="feature-window frames per event (agent: 48)")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: postgresql,naive,paced")
    ap.add_argument(
        "--paced-rate",
        type=float,
        default=1000.0,
        help="also measure SQLite latency with the publishers paced at this many events/s in all",
    )
    ap.add_argument("--protocol", type=int, choices=(1, 2), default=2, help="schema version of the events")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.environ["SLEEPSAFE_BENCH_PROTOCOL"] = str(a.protocol)  # publisher processes read it
    globals()["PROTOCOL"] = a.protocol  # and this one, for payload_bytes
    a.events -= a.events % a.publishers  # every publisher sends the same number
    a.naive_events -= a.naive_events % a.publishers
    from sleepsafe.logs import configure_logging
    from tests.conftest import Mosquitto, Postgres

    configure_logging("warning", "json")
    skip = set(filter(None, a.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    broker = Mosquitto(tmp / "broker")
    broker.start()
    out: dict[str, Any] = {
        "events": a.events,
        "publishers": a.publishers,
        "features_per_event": a.features,
        "protocol": a.protocol,
        "payload_bytes": len(template("bench-0", a.features)),
        "cpus": os.cpu_count(),
    }
    try:
        progress("bare subscriber")
        out["bare"] = run_bare(broker.port, a.events, a.publishers, a.features)
        progress("sink into SQLite")
        out["sqlite"] = run_sink(
            broker.port, f"sqlite:///{tmp / 'sink.sqlite3'}", a.events, a.publishers, a.features, "sqlite"
        )
        if "postgresql" not in skip:
            progress("sink into PostgreSQL")
            pg = Postgres(fsync=True)
            pg.start()
            try:
                out["postgresql"] = run_sink(
                    broker.port, pg.new_database(), a.events, a.publishers, a.features, "postgresql"
                )
            finally:
                pg.stop()
        if "paced" not in skip:
            progress(f"sink into SQLite, paced at {a.paced_rate:.0f}/s")
            n = int(a.paced_rate * 10) - int(a.paced_rate * 10) % a.publishers  # 10 s of traffic
            out["sqlite_paced"] = {
                "rate": a.paced_rate,
                **run_sink(
                    broker.port,
                    f"sqlite:///{tmp / 'paced.sqlite3'}",
                    n,
                    a.publishers,
                    a.features,
                    "paced",
                    a.paced_rate,
                ),
            }
        if "naive" not in skip:
            progress("naive sink")
            out["naive"] = run_naive(broker.port, a.naive_events, a.publishers, a.features)
    finally:
        broker.stop()
    out["ratio_to_bare"] = round(out["sqlite"]["events_per_s"] / out["bare"]["events_per_s"], 3)
    if "naive" in out:
        out["ratio_to_naive"] = round(out["sqlite"]["events_per_s"] / out["naive"]["events_per_s"], 1)
    if a.json:
        print(json.dumps(out))
    else:
        print(
            f"{a.events} events of {out['payload_bytes']} bytes from {a.publishers} publishers, "
            f"{out['cpus']} CPUs"
        )
        for k in ("bare", "sqlite", "postgresql", "sqlite_paced", "naive"):
            if k in out:
                r = out[k]
                p99 = f"  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms" if "p99_ms" in r else ""
                cpu = f"  {r['cpu_us_per_event']} CPU us/event" if "cpu_us_per_event" in r else ""
                print(f"  {k:<11} {r['events_per_s']:>9.1f} events/s{p99}{cpu}")
        print(f"  sqlite / bare  = {out['ratio_to_bare']}  (goal >= 0.8)")
        if "ratio_to_naive" in out:
            print(f"  sqlite / naive = {out['ratio_to_naive']}  (goal >= 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
