"""Property-based fuzz of the MQTT ingest (hypothesis): a real `sleepsafe-sink run` on a real
Mosquitto, on SQLite and on PostgreSQL, gets mostly-valid events, telemetry, status and stats
(protocol v1 and v2) with fields mutated — wrong types, raw NaN/Infinity tokens, huge and
negative numbers, year-1 and year-9999 dates, NUL and other control characters, over-long
strings, deep nesting, unknown fields, wrong ``v``, a device id other than the topic's, invalid
UTF-8, empty and oversized payloads — plus arbitrary bytes and JSON, on valid and invalid topics.

Every generated message carries what the protocol says must happen to it (stored, a dead
letter, or either where the protocol leaves it to the parser), and the accounting is exact:
every message sent is a new row, a duplicate of one, an accepted stats report, or one more
sighting of a dead letter (``times_seen``); each message's own fate is looked up by its key and
by the dead letter's digest.  After each batch the sink must be alive, /health ok and no read
endpoint a server error; at the end the dashboard must draw in headless Chromium."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, select

from cloud_sink import schema
from sleepsafe.protocol import (
    INT32_MAX,
    MESSAGES,
    PROTOCOL_VERSIONS,
    TOPIC_ROOT,
    DriverState,
    EventType,
    FeatureSample,
    FeatureWindow,
    Severity,
)
from tests.conftest import API_TOKEN, SinkProcess, _unavailable, launch_chromium, wait_until

MAX_BYTES = 64 * 1024  # store.max_payload_bytes of the sink under test
MILLIS_MAX = 2**53
ANCHOR = "fuzz-anchor"  # a vehicle with plenty of plain data, so every chart has something to draw
RESERVED_PREFIX = f"{TOPIC_ROOT}/fleet/"  # the sink's own topics: ignored, never rows nor dead letters
NS = uuid.UUID("6c1b1f0e-5d4e-4c59-9a35-0f8f2b8f6a11")
_serial = itertools.count(1)  # unique event ids, msg ids and status sessions, across all examples

Verdict = Literal["ok", "bad", "either"]
OK: Verdict = "ok"
BAD: Verdict = "bad"
EITHER: Verdict = "either"


def worst(*vs: Verdict) -> Verdict:
    return BAD if BAD in vs else EITHER if EITHER in vs else OK


# ----------------------------------------------------------------------------- JSON by hand


class Raw:
    """JSON text written as is: NaN, Infinity, 1e400, deep nesting, a lone surrogate escape."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r})"


class RawStr:
    """A JSON string whose bytes between the quotes are written as is: raw control bytes,
    invalid UTF-8."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RawStr({self.text[:40]!r})"


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()


@dataclass(frozen=True)
class Style:
    ascii: bool = True
    spaced: bool = False
    order: Literal["as-is", "sorted", "reversed"] = "as-is"
    dup: str | None = None  # a top-level key written twice (same value)


def encode(v: Any, style: Style, top: bool = True) -> bytes:
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, RawStr):
        return b'"' + v.text + b'"'
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=style.ascii).encode()
    if v is None or isinstance(v, (bool, int, float)):
        return json.dumps(v).encode()
    comma = b", " if style.spaced else b","
    colon = b": " if style.spaced else b":"
    if isinstance(v, list):
        return b"[" + comma.join(encode(x, style, False) for x in v) + b"]"
    assert isinstance(v, dict), v
    keys = list(v)
    if top and style.order == "sorted":
        keys.sort()
    elif top and style.order == "reversed":
        keys.reverse()
    if top and style.dup in v:
        keys.append(style.dup)
    return (
        b"{" + comma.join(encode(k, style, False) + colon + encode(v[k], style, False) for k in keys) + b"}"
    )


def iso(t: datetime) -> str:
    return t.isoformat()


def now() -> datetime:
    return datetime.now(timezone.utc)


# ----------------------------------------------------------------------------- field tags


@dataclass(frozen=True)
class Tag:
    """What the protocol admits in one field: its type, range, whether null or leaving it out
    is valid, and whether it is part of the storage key (then it is only ever made invalid)."""

    t: str
    lo: float = 0
    hi: float = 0
    nullable: bool = False
    omittable: bool = False
    key: bool = False
    values: tuple[str, ...] = ()
    max_len: int = 0
    item: bool = False  # an element of a list: never removed (the later indices would shift)


def _int(hi: int, opt: bool = False) -> Tag:
    return Tag("int", 0, hi, nullable=opt, omittable=opt)


def _float(lo: float, hi: float, opt: bool = False) -> Tag:
    return Tag("float", lo, hi, nullable=opt, omittable=opt)


def _enum(values: Any, key: bool = False) -> Tag:
    return Tag("enum", values=tuple(getattr(x, "value", x) for x in values), key=key)


DT = Tag("dt")
DT_OPT = Tag("dt", nullable=True, omittable=True)
BOOL = Tag("bool")
EAR, RATIO, UNIT, RATE = _float(0, 5), _float(0, 100), _float(0, 1), _float(0, 1e6)
ANGLE = _float(-360, 360)
COUNT, MILLIS = _int(INT32_MAX), _int(MILLIS_MAX)

SAMPLE_TAGS: dict[str, Tag] = {
    "t_ms": MILLIS, "frame": MILLIS, "face": BOOL, "ear": EAR, "ear_left": EAR, "ear_right": EAR,
    "openness": RATIO, "mar": RATIO, "yaw": ANGLE, "pitch": ANGLE, "roll": ANGLE, "iris_vis": UNIT,
}  # fmt: skip
WINDOW_TAGS: dict[str, Tag] = {
    **SAMPLE_TAGS, "t_ms": COUNT, "frame": COUNT, "face": Tag("int", 0, 1),
}  # fmt: skip
EVENT_TAGS: dict[str, Tag] = {
    "v": Tag("v"),
    "event_id": Tag("uuid", key=True),
    "device_id": Tag("device"),
    "type": _enum(EventType),
    "phase": _enum(("raised", "ended", "instant"), key=True),
    "severity": _enum(Severity),
    "state": _enum(DriverState),
    "start_time": DT,
    "raised_time": DT_OPT,
    "end_time": DT_OPT,
    "start_ms": MILLIS,
    "raised_ms": _int(MILLIS_MAX, True),
    "end_ms": _int(MILLIS_MAX, True),
    "start_frame": MILLIS,
    "raised_frame": _int(MILLIS_MAX, True),
    "end_frame": _int(MILLIS_MAX, True),
    "duration_ms": _int(INT32_MAX, True),
    "ear_value": _float(0, 5, True),
    "openness": _float(0, 100, True),
    "is_drowsy": BOOL,
    "perclos": _float(0, 1, True),
    "model_versions": Tag("map", omittable=True),
    # Later fields, left out by vehicles that do not use them (never generated, so never mutated;
    # their own tests: test_ack.py, test_eye_crops.py).
    "acknowledged_ms": _int(MILLIS_MAX, True),
    "acknowledged_via": Tag(
        "enum", values=("button", "command", "cli", "signal"), nullable=True, omittable=True
    ),
    "crops": Tag("crops", nullable=True, omittable=True),
}
TELEMETRY_TAGS: dict[str, Tag] = {
    "v": Tag("v"),
    "msg_id": Tag("uuid", key=True),
    "device_id": Tag("device"),
    "time": DT,
    "state": _enum(DriverState),
    "perclos": UNIT,
    "blink_rate_per_min": RATE,
    "blinks": COUNT,
    "baseline_ear": EAR,
    "calibrated": BOOL,
    "is_drowsy": BOOL,
    "face": BOOL,
}
STATUS_TAGS: dict[str, Tag] = {
    "v": Tag("v"),
    "device_id": Tag("device"),
    "state": _enum(("online", "offline", "stopped"), key=True),
    "seq": Tag("int", 0, INT32_MAX, key=True),
    "time": DT,
    "version": Tag("text", max_len=32),
}
STATS_TAGS: dict[str, Tag] = {
    "v": Tag("v"),
    "device_id": Tag("device"),
    "time": DT,
    "fps": RATE,
    "frames": MILLIS,
    "dropped_frames": MILLIS,
    "bad_frames": MILLIS,
    "latency_p50_ms": RATE,
    "latency_p99_ms": RATE,
    "stages_ms": Tag("stages", omittable=True),
    "reconnects": COUNT,
    "camera_lost": BOOL,
    "spool_depth": COUNT,
    "spool_evicted": Tag("evicted"),
    "mqtt_reconnects": COUNT,
    "providers": Tag("list_text"),
    "model_versions": Tag("map"),
}
KINDS = ("event", "telemetry", "status", "stats")


def field_names(kind: str) -> set[str]:
    """Every field of the kind in any protocol version: an 'unknown field' must be none of them."""
    return {f for model in MESSAGES[kind].values() for f in model.model_fields}


# ----------------------------------------------------------------------------- value strategies

Mut = tuple[Any, Verdict, str]  # (new value or DELETE, what the protocol says, description)

_SAFE_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")  # no surrogates, no NUL
SHORT_OK = st.text(_SAFE_CHARS, max_size=32)
TEXT_OK = st.text(_SAFE_CHARS, max_size=128)
RATE_OK = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
WRONG_TYPES: list[Any] = [[], {}, "zz", Raw(b"[[[[[[1]]]]]]")]
NAN_TOKENS = [Raw(b"NaN"), Raw(b"Infinity"), Raw(b"-Infinity"), Raw(b"1e400"), Raw(b"-1e400")]
HUGE = [10**30, 2**63, -(2**63), 2**64, 10**400]
# Mostly ASCII control characters (JSON-escaped, so valid JSON), a few other odd code points.
ODD_TEXT = [
    "\x01\x02\x1f",
    "a\tb\nc\rd",
    "\x7f\x80\x9f",
    "\u2028\u2029",
    "\ufeff",
    "\uffff\ufffe",
    "\U0010ffff",
]


def _just(value: Any, verdict: Verdict, desc: str) -> st.SearchStrategy[Mut]:
    return st.just((value, verdict, desc))


def _presence(tag: Tag) -> list[st.SearchStrategy[Mut]]:
    out = [_just(None, OK if tag.nullable else BAD, "null")]
    # Left out, an id gets a random default (its row could not be found); a list item is kept.
    if tag.t != "uuid" and not tag.item:
        out.append(_just(DELETE, OK if tag.omittable else BAD, "left out"))
    return out


LISTS, MAPS = ("features", "list_text", "list_count"), ("map", "stages", "evicted")


def _deep(depth: int) -> Raw:
    return Raw(b"[" * depth + b"]" * depth)


def mutations(tag: Tag, cur: Any, device: str, version: int) -> st.SearchStrategy[Mut]:
    """Values for one field, each with what the protocol says of it."""
    t = tag.t
    opts: list[st.SearchStrategy[Mut]] = [*_presence(tag)]
    opts += [
        _just(w, BAD, f"wrong type {w!r}")
        for w in WRONG_TYPES
        if not (w == [] and tag.t in LISTS)
        and not (w == {} and tag.t in MAPS)
        and not (w == "zz" and t == "text")
    ]
    opts.append(st.sampled_from([2, 50, 1000, 20_000]).map(lambda d: (_deep(d), BAD, f"nested {d} deep")))
    if t == "int":
        lo, hi = int(tag.lo), int(tag.hi)
        if not tag.key:
            opts += [
                st.integers(lo, hi).map(lambda x: (x, OK, f"int {x}")),
                _just(hi, OK, "max"),
                _just(lo, OK, "min"),
            ]
        opts += [
            _just(hi + 1, BAD, "max + 1"),
            _just(lo - 1, BAD, "min - 1"),
            st.sampled_from(HUGE).map(lambda x: (x, BAD, f"huge {str(x)[:12]}")),
            st.sampled_from(NAN_TOKENS).map(lambda r: (r, BAD, f"raw {r.text!r}")),
            _just(lo + 0.5, BAD, "fractional"),
            _just(str(cur), EITHER, "numeric string"),
            _just(float(cur) if isinstance(cur, int) else 1.0, EITHER, "as float"),
        ]
        if not tag.key:  # these change the value, and so the key
            opts += [_just(True, EITHER, "true"), _just(Raw(b"1e2"), EITHER, "1e2")]
    elif t == "float":
        flo, fhi = tag.lo, tag.hi
        opts += [
            st.floats(flo, fhi, allow_nan=False, allow_infinity=False).map(lambda x: (x, OK, f"float {x!r}")),
            _just(fhi, OK, "max"),
            _just(flo, OK, "min"),
            _just(int(fhi), OK, "int max"),
            _just(fhi + max(abs(fhi), 1.0) * 1e-6, BAD, "above max"),
            _just(flo - max(abs(flo), 1.0) * 1e-6, BAD, "below min"),
            _just(math.nextafter(fhi, math.inf), EITHER, "next float above max"),
            st.sampled_from(HUGE).map(lambda x: (x, BAD, f"huge {str(x)[:12]}")),
            st.sampled_from(NAN_TOKENS).map(lambda r: (r, BAD, f"raw {r.text!r}")),
            _just(str(flo), EITHER, "numeric string"),
            _just(True, EITHER, "true"),
        ]
        if flo <= 0 <= fhi:
            opts += [_just(Raw(b"-0.0"), OK, "-0.0"), _just(Raw(b"5e-324"), OK, "subnormal")]
    elif t == "dt":
        opts += [
            st.integers(0, 300 * 86400).map(lambda s: (iso(now() - timedelta(seconds=s)), OK, f"{s} s ago")),
            st.integers(0, 6 * 3600).map(lambda s: (iso(now() + timedelta(seconds=s)), OK, f"{s} s ahead")),
            st.sampled_from([(5, 45), (14, 0), (-12, 0), (-3, -30)]).map(
                lambda hm: (
                    iso(now().astimezone(timezone(timedelta(hours=hm[0], minutes=hm[1])))),
                    OK,
                    f"offset {hm}",
                )
            ),
            st.just(0).map(lambda _: (now().replace(tzinfo=None).isoformat(), OK, "naive")),
            st.just(0).map(lambda _: (now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), OK, "Z")),
            st.just(0).map(lambda _: (int(now().timestamp()) - 5, OK, "unix seconds")),
            st.just(0).map(lambda _: (int(now().timestamp() * 1000) - 5000, EITHER, "unix ms")),
            st.just(0).map(lambda _: (str(int(now().timestamp())), EITHER, "unix string")),
            st.just(0).map(lambda _: (now().strftime("%Y-%m-%dT%H:%M:%S.1234567Z"), EITHER, "7 digits")),
            st.just(0).map(lambda _: (now().strftime("%Y-%m-%d %H:%M:%Sz"), EITHER, "space, z")),
            st.just(0).map(lambda _: (now().strftime("%Y-%m-%d"), EITHER, "date only")),
            st.just(0).map(lambda _: (now().strftime("%Y-%m-%dT%H:%M:60Z"), EITHER, "leap second")),
            st.sampled_from(
                [
                    "0001-01-01T00:00:00Z",
                    "0001-01-01T00:00:00+01:00",
                    "9999-12-31T23:59:59Z",
                    "9999-12-31T23:59:59-01:00",
                    "2024-02-30T00:00:00Z",
                    "",
                    "not a date",
                ]
            ).map(lambda s: (s, BAD, f"date {s!r}")),
            st.just(0).map(lambda _: (iso(now() - timedelta(days=401)), BAD, "401 days ago")),
            st.just(0).map(lambda _: (iso(now() + timedelta(days=2)), BAD, "2 days ahead")),
            _just(10**20, BAD, "huge timestamp"),
            _just(True, BAD, "true"),
            st.sampled_from(NAN_TOKENS).map(lambda r: (r, EITHER, f"raw {r.text!r}")),
        ]
    elif t == "bool":
        opts += [
            _just(not cur if isinstance(cur, bool) else True, OK, "flipped"),
            st.sampled_from([2, -1, 0.5, "zz", ""]).map(lambda x: (x, BAD, f"bool {x!r}")),
            st.sampled_from(["true", "false", "yes", "1", 0, 1, 1.0]).map(
                lambda x: (x, EITHER, f"bool {x!r}")
            ),
            st.sampled_from(NAN_TOKENS).map(lambda r: (r, BAD, f"raw {r.text!r}")),
        ]
    elif t == "uuid":
        c = str(cur)
        opts += [
            _just(c.upper(), OK, "upper case"),
            _just(c.replace("-", ""), OK, "hex"),
            _just("{" + c + "}", EITHER, "braces"),
            _just("urn:uuid:" + c, EITHER, "urn"),
            st.sampled_from(["", c + "0", c[:-1], c[:8] + "\x00" + c[9:], 5]).map(
                lambda x: (x, BAD, f"uuid {x!r}")
            ),
        ]
    elif t == "device":
        other = device + "-x" if len(device) < 62 else device[:-1]
        wrong: list[Any] = [other, device + "\x00", "x" * 65, "", 5, device + " "]
        if device.swapcase() != device:
            wrong.append(device.swapcase())
        opts += [st.sampled_from(wrong).map(lambda x: (x, BAD, f"device {x!r}"))]
    elif t == "enum":
        alternatives = [x for x in tag.values if x != cur]
        if not tag.key and alternatives:
            opts.append(st.sampled_from(alternatives).map(lambda x: (x, OK, f"enum {x}")))
        bad: list[Any] = [
            x for x in sorted({str(cur).upper(), str(cur).lower(), str(cur).title()}) if x not in tag.values
        ]
        bad += ["", str(cur) + " ", str(cur) + "\x00", 1]
        opts.append(st.sampled_from(bad).map(lambda x: (x, BAD, f"enum {x!r}")))
    elif t == "text":
        opts += _text_mutations(tag.max_len)
    elif t == "v":
        others: list[Any] = [x for x in PROTOCOL_VERSIONS if x != version]
        opts = [
            _just(DELETE, BAD, "no v"),
            st.sampled_from([0, -1, 3, 99, 10**30, None, [], "x", Raw(b"NaN")]).map(
                lambda x: (x, BAD, f"v {x!r}")
            ),
            st.sampled_from([*others, str(version), float(version), True]).map(
                lambda x: (x, EITHER, f"v {x!r}")
            ),
        ]
    elif t == "map":
        opts += [
            st.dictionaries(SHORT_OK, TEXT_OK, max_size=32).map(lambda d: (d, OK, f"map of {len(d)}")),
            _just({f"k{i}": "1" for i in range(32)}, OK, "32 entries"),
            _just({f"k{i}": "1" for i in range(33)}, BAD, "33 entries"),
            st.sampled_from(
                [{"a\x00": "1"}, {"k" * 33: "1"}, {"a": 1}, {"a": None}, {"a": ["1"]}, {"a": "x" * 129}]
            ).map(lambda d: (d, BAD, f"map {str(d)[:40]}")),
        ]
    elif t == "stages":
        opts += [
            st.dictionaries(SHORT_OK, st.dictionaries(SHORT_OK, RATE_OK, max_size=3), max_size=6).map(
                lambda d: (d, OK, f"stages of {len(d)}")
            ),
            st.sampled_from(
                [
                    {"landmarks": {"p50": Raw(b"NaN")}},
                    {"landmarks": {"p50": -1}},
                    {"landmarks": 5},
                    {"landmarks": {"p50": "zz"}},
                    {f"s{i}": {} for i in range(33)},
                    {"k" * 33: {}},
                ]
            ).map(lambda d: (d, BAD, f"stages {str(d)[:40]}")),
        ]
    elif t == "evicted":
        opts += [
            st.dictionaries(SHORT_OK, st.integers(0, MILLIS_MAX), max_size=5).map(
                lambda d: (d, OK, "evicted")
            ),
            st.sampled_from([{"event": -1}, {"event": MILLIS_MAX + 1}, {"event": 0.5}, {"e": "zz"}]).map(
                lambda d: (d, BAD, f"evicted {d}")
            ),
        ]
    elif t == "list_text":
        opts += [
            st.lists(TEXT_OK, max_size=32).map(lambda xs: (xs, OK, f"{len(xs)} texts")),
            _just(["p"] * 32, OK, "32 texts"),
            _just(["p"] * 33, BAD, "33 texts"),
            st.sampled_from([[5], ["x" * 129], ["a\x00"], [[]]]).map(
                lambda xs: (xs, BAD, f"texts {xs!r:.30}")
            ),
        ]
    elif t == "list_count":
        opts += [
            st.lists(st.integers(0, INT32_MAX), max_size=40).map(lambda xs: (xs, OK, f"{len(xs)} counts")),
            _just([0] * 3600, OK, "3600 counts"),
            _just([0] * 3601, BAD, "3601 counts"),
            st.sampled_from([[-1], [INT32_MAX + 1], [0.5], [Raw(b"NaN")]]).map(
                lambda xs: (xs, BAD, "counts")
            ),
        ]
    elif t == "features":
        opts += [
            _just([], OK, "no features"),
            st.lists(sample_strategy(), min_size=1, max_size=12).map(
                lambda xs: (xs, OK, f"{len(xs)} samples")
            ),
            st.sampled_from([[{}], [5], {}]).map(lambda x: (x, BAD, f"features {x!r}")),
        ]
    elif t == "window":
        opts += [
            st.lists(sample_strategy(), max_size=12).map(
                lambda xs: (window_of(xs), OK, f"window of {len(xs)}")
            ),
            st.just(0).map(lambda _: ({k: [] for k in WINDOW_TAGS if k != "mar"}, BAD, "window without mar")),
            st.just(0).map(lambda _: ({**{k: [] for k in WINDOW_TAGS}, "ear": [0.1]}, BAD, "ragged window")),
            st.just(0).map(lambda _: ({**{k: [] for k in WINDOW_TAGS}, "zz": []}, BAD, "window with zz")),
        ]
    elif t == "sample":
        opts = [
            st.sampled_from(sorted(SAMPLE_TAGS)).map(
                lambda k: ({kk: vv for kk, vv in cur.items() if kk != k}, BAD, f"sample without {k}")
            ),
            _just({**cur, "zz": 1}, BAD, "sample with zz"),
            _just([], BAD, "sample as list"),
        ]
    return st.one_of(opts)


def _text_mutations(n: int) -> list[st.SearchStrategy[Mut]]:
    return [
        st.text(_SAFE_CHARS, max_size=n).map(lambda s: (s, OK, f"text {s[:20]!r}")),
        st.sampled_from(ODD_TEXT).map(lambda s: (s[:n], OK, f"odd text {s!r}")),
        st.sampled_from(["x", "é", "🚌"]).map(lambda c: (c * n, OK, f"{n} x {c!r}")),
        st.sampled_from(["x", "é", "🚌"]).map(lambda c: (c * (n + 1), BAD, f"{n + 1} x {c!r}")),
        _just("x" * 10_000, BAD, "10000 chars"),
        _just("a\x00b", BAD, "NUL"),
        _just(Raw(b'"a\\u0000"'), BAD, "escaped NUL"),
        st.sampled_from([b"a\x01b", b"a\x1fb", b"a\nb", b"a\x00b"]).map(
            lambda b: (RawStr(b), BAD, f"raw control {b!r}")
        ),
        st.sampled_from(
            [b"a\xffb", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"a\xe2\x82"]
        ).map(lambda b: (RawStr(b), BAD, f"invalid UTF-8 {b!r}")),
        st.sampled_from([b'"\\ud800"', b'"x\\udc00"', b'"\\ud83d"']).map(
            lambda b: (Raw(b), BAD, f"lone surrogate {b!r}")
        ),
        _just(Raw(b'"\\ud83d\\ude8c"'), OK, "surrogate pair"),
        _just(5, BAD, "number"),
    ]


def sample_strategy() -> st.SearchStrategy[dict[str, Any]]:
    """One valid frame of a v1 feature window."""

    def f(lo: float, hi: float) -> st.SearchStrategy[float]:
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False)

    return st.fixed_dictionaries(
        {
            "t_ms": st.integers(0, 10**7),
            "frame": st.integers(0, 10**6),
            "face": st.booleans(),
            "ear": f(0, 5),
            "ear_left": f(0, 5),
            "ear_right": f(0, 5),
            "openness": f(0, 100),
            "mar": f(0, 100),
            "yaw": f(-360, 360),
            "pitch": f(-360, 360),
            "roll": f(-360, 360),
            "iris_vis": f(0, 1),
        }
    )


def window_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return FeatureWindow.from_samples([FeatureSample(**s) for s in samples]).model_dump(mode="json")


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Msg:
    """One MQTT message and what must become of it."""

    topic: str
    payload: bytes
    expect: Verdict  # ok: stored (or, stats, accepted); bad: a dead letter; either: one of the two
    kind: str | None = None  # the kind its topic names, when the topic is valid
    key: tuple[Any, ...] | None = None  # the row it makes when stored
    device: str | None = None
    why: str = ""

    def __repr__(self) -> str:
        return f"Msg({self.topic!r}, {len(self.payload)} bytes, {self.expect}: {self.why})"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.topic.encode() + b"\0" + self.payload).hexdigest()


DEVICE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # the protocol's DeviceId, as a full match
DEVICES = st.one_of(
    st.sampled_from(["bus-1", "bus-2", "Tram_3", "v.4", "x", "A" * 64, "9-lives", "Bus-1"]),
    st.from_regex(DEVICE_PATTERN, fullmatch=True),
).filter(lambda d: d not in ("fleet", ANCHOR))
# Topic levels Mosquitto accepts (no control characters, non-characters, wildcards or NUL).
_TOPIC_CHARS = st.sampled_from(list("abcXYZ019_.-~ :@!$%&'()*,;=é漢🚌"))
BAD_DEVICES = st.one_of(
    st.sampled_from(["", "-bus", ".bus", "_bus", "bus 1", "bús", "x" * 65, "漢", "bus:1", "🚌"]),
    st.text(_TOPIC_CHARS, max_size=70),
).filter(lambda d: not _valid_device(d))
BAD_KINDS = st.sampled_from(
    ["events", "Event", "EVENT", "telemetry2", "", "status ", "stat", "x", "receipts"]
)


def _valid_device(d: str) -> bool:
    return re.fullmatch(DEVICE_PATTERN, d) is not None


def valid_topic(device: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/{device}/{kind}"


def reserved(topic: str) -> bool:
    """The sink's own topics (model releases, receipts): skipped without a trace."""
    return topic.startswith(RESERVED_PREFIX) or topic.endswith("/receipt")


@st.composite
def base_message(
    draw: st.DrawFn, kind: str, device: str, version: int
) -> tuple[dict[str, Any], dict[str, Tag]]:
    """A valid message of ``kind`` (checked against the protocol model) and its field tags."""
    t = now() - timedelta(seconds=draw(st.integers(0, 20 * 3600)))
    n = next(_serial)
    unit = st.floats(0, 1, allow_nan=False, allow_infinity=False)
    obj: dict[str, Any]
    if kind == "event":
        tags = dict(EVENT_TAGS)
        phase = draw(st.sampled_from(["raised", "ended", "instant"]))
        dur = draw(st.integers(0, 60_000))
        start_ms = draw(st.integers(0, 10**9))
        obj = {
            "v": version,
            "event_id": str(uuid.uuid5(NS, f"event/{n}")),
            "device_id": device,
            "type": draw(st.sampled_from([e.value for e in EventType])),
            "phase": phase,
            "severity": draw(st.sampled_from([s.value for s in Severity])),
            "state": draw(st.sampled_from([s.value for s in DriverState])),
            "start_time": iso(t),
            "raised_time": None if phase == "instant" else iso(t + timedelta(seconds=1)),
            "end_time": None if phase == "raised" else iso(t + timedelta(milliseconds=dur)),
            "start_ms": start_ms,
            "raised_ms": None if phase == "instant" else start_ms + 1000,
            "end_ms": None if phase == "raised" else start_ms + dur,
            "start_frame": start_ms // 33,
            "raised_frame": None,
            "end_frame": None,
            "duration_ms": None if phase == "raised" else dur,
            "ear_value": draw(st.none() | st.floats(0, 0.5)),
            "openness": draw(st.none() | st.floats(0, 1.5)),
            "is_drowsy": draw(st.booleans()),
            "perclos": draw(st.none() | unit),
            "model_versions": draw(st.sampled_from([{}, {"eye_state": "1.2.0", "temporal": "0.3"}])),
        }
        samples = draw(st.lists(sample_strategy(), max_size=3))
        if version == 1:
            obj["features"] = samples
            tags["features"] = Tag("features", omittable=True)
        else:
            empty_window = not samples and draw(st.booleans())
            obj["window"] = None if empty_window else window_of(samples)
            tags["window"] = Tag("window", nullable=True, omittable=True)
    elif kind == "telemetry":
        tags = dict(TELEMETRY_TAGS)
        obj = {
            "v": version,
            "msg_id": str(uuid.uuid5(NS, f"telemetry/{n}")),
            "device_id": device,
            "time": iso(t),
            "state": draw(st.sampled_from([s.value for s in DriverState])),
            "perclos": draw(unit),
            "blink_rate_per_min": draw(st.floats(0, 60)),
            "blinks": draw(st.integers(0, 10_000)),
            "baseline_ear": draw(st.floats(0.1, 0.4)),
            "calibrated": draw(st.booleans()),
            "is_drowsy": draw(st.booleans()),
            "face": draw(st.booleans()),
        }
        if version == 2:
            obj["blink_durations_ms"] = draw(st.lists(st.integers(50, 3000), max_size=5))
            obj["long_blinks"] = draw(st.integers(0, 5))
            tags["blink_durations_ms"] = Tag("list_count", omittable=True)
            tags["long_blinks"] = Tag("int", 0, INT32_MAX, omittable=True)
    elif kind == "status":
        tags = dict(STATUS_TAGS)
        obj = {
            "v": version,
            "device_id": device,
            "state": draw(st.sampled_from(["online", "offline", "stopped"])),
            "seq": n,
            "time": iso(t),
            "version": draw(st.sampled_from(["0.9.0", "1.0.0+fuzz", ""])),
        }
    else:
        tags = dict(STATS_TAGS)
        obj = {
            "v": version,
            "device_id": device,
            "time": iso(t),
            "fps": draw(st.floats(0, 120)),
            "frames": draw(st.integers(0, 10**8)),
            "dropped_frames": draw(st.integers(0, 1000)),
            "bad_frames": draw(st.integers(0, 1000)),
            "latency_p50_ms": draw(st.floats(0, 100)),
            "latency_p99_ms": draw(st.floats(0, 500)),
            "stages_ms": {"landmarks": {"p50": 5.0, "p99": 9.0}, "detector": {"p50": 0.1, "p99": 0.2}},
            "reconnects": draw(st.integers(0, 10)),
            "camera_lost": draw(st.booleans()),
            "spool_depth": draw(st.integers(0, 5000)),
            "spool_evicted": {},
            "mqtt_reconnects": draw(st.integers(0, 10)),
            "providers": ["CPUExecutionProvider"],
            "model_versions": {"eye_state": "1.2.0"},
        }
    # The unmutated message must be valid, and the tags cover its fields: a protocol change
    # shows here, not as a count mismatch.
    model = MESSAGES[kind][version]
    model.model_validate_json(json.dumps(obj))
    assert set(tags) == set(model.model_fields), f"{kind} v{version}: tags out of date with the protocol"
    return obj, tags


def targets(obj: dict[str, Any], tags: dict[str, Tag]) -> list[tuple[tuple[Any, ...], Tag]]:
    """Every field that can be mutated, nested ones (feature samples, window columns, map
    values) included, as (path, tag)."""
    out: list[tuple[tuple[Any, ...], Tag]] = [((k,), tags[k]) for k in obj if k in tags]
    features = obj.get("features")  # a list of samples, unless a mutation made it something else
    for i, s in enumerate(features if isinstance(features, list) else []):
        if isinstance(s, dict):
            out.append((("features", i), Tag("sample", item=True)))
            out += [(("features", i, k), tag) for k, tag in SAMPLE_TAGS.items() if k in s]
    win = obj.get("window")
    if isinstance(win, dict):
        out += [
            (("window", k, 0), t) for k, t in WINDOW_TAGS.items() if isinstance(win.get(k), list) and win[k]
        ]
    for name in ("model_versions", "providers"):
        value = obj.get(name)
        if isinstance(value, dict):  # an entry left out is a smaller map: valid
            out += [((name, k), Tag("text", max_len=128, omittable=True)) for k in value]
        elif isinstance(value, list):
            out += [((name, i), Tag("text", max_len=128, item=True)) for i in range(len(value))]
    return out


def get_at(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def set_at(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    parent = get_at(obj, path[:-1])
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


def _related(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


PAYLOAD_OPS: list[tuple[str, Verdict]] = [
    ("empty", BAD), ("truncated", BAD), ("garbage after", BAD), ("in an array", BAD), ("UTF-16", BAD),
    ("a 0xff byte", BAD), ("a JSON scalar", BAD), ("oversized", BAD), ("deep nesting", BAD),
    ("trailing whitespace", OK), ("leading whitespace", OK), ("exactly max bytes", OK), ("BOM", EITHER),
]  # fmt: skip


BAD_KEYS: list[Any] = [
    None, 5, [], {}, "", "x" * 200, "a\x00b", "raised\x00", "\x01\x02", "None", ["x" * 100], {"a": "b" * 130},
    Raw(b"[" * 80 + b"]" * 80), "🚌" * 100,
]  # fmt: skip


# Positions in a payload are drawn as fractions: its length holds ids and clock readings, which
# differ from one run of a strategy to the next (hypothesis wants the same draws each time).
FRACTION = st.floats(0, 1, exclude_max=True)


@st.composite
def payload_op(draw: st.DrawFn, payload: bytes) -> tuple[bytes, Verdict, str]:
    name, verdict = draw(st.sampled_from(PAYLOAD_OPS))
    p = payload
    if name == "empty":
        p = b""
    elif name == "truncated":
        p = p[: int(draw(FRACTION) * len(p))]
    elif name == "garbage after":
        p += draw(st.sampled_from([b"x", b",", b"}", b"\x00", b"{}"]))
    elif name == "in an array":
        p = b"[" + p + b"]"
    elif name == "UTF-16":
        p = p.decode("utf-8", "replace").encode("utf-16")
    elif name == "a 0xff byte":
        i = int(draw(FRACTION) * len(p))
        p = p[:i] + b"\xff" + p[i:]
    elif name == "a JSON scalar":
        p = draw(st.sampled_from([b"null", b"1", b'"x"', b"[]", b"true", b"1e999999"]))
    elif name == "oversized":
        p += b" " * (MAX_BYTES - len(p) + 1 + draw(st.integers(0, 100)))
    elif name == "deep nesting":
        d = draw(st.sampled_from([200, 5000, 30_000]))
        p = draw(st.sampled_from([b"[" * d + b"]" * d, b'{"v":1,"a":' + b"[" * d + b"]" * d + b"}"]))
    elif name == "trailing whitespace":
        p += b" \n\t\r"
    elif name == "leading whitespace":
        p = b"\n  " + p
    elif name == "exactly max bytes":
        if len(p) > MAX_BYTES:
            return p, BAD, "over max bytes"
        p += b" " * (MAX_BYTES - len(p))
    elif name == "BOM":
        p = b"\xef\xbb\xbf" + p
    return p, verdict, name


@st.composite
def model_message(draw: st.DrawFn) -> Msg:
    """A valid message built from the protocol models, then 0-3 field mutations, maybe a
    different JSON style, maybe a payload-level and maybe a topic-level mutation."""
    kind = draw(st.sampled_from(KINDS))
    version = draw(st.sampled_from(PROTOCOL_VERSIONS))
    device = draw(DEVICES)
    obj, tags = draw(base_message(kind, device, version))
    # Whether to apply each kind of damage: a fair coin of its own weight (hypothesis favours the
    # simplest choice, which would make each of them fire in almost every early example).
    rnd = draw(st.randoms(use_true_random=True))
    verdicts: list[Verdict] = []
    whys: list[str] = [f"{kind} v{version}"]
    done: list[tuple[Any, ...]] = []
    if rnd.random() < 0.15:
        # Every number at one end of its range, every text at its longest: all valid, and what
        # the store's columns, conversions and reads must take.
        if kind == "event" and version == 1 and not obj["features"]:
            obj["features"] = [draw(sample_strategy())]
        elif kind == "event" and version == 2 and not obj["window"]:
            obj["window"] = window_of([draw(sample_strategy())])
        for path, tag in targets(obj, tags):
            if tag.t in ("int", "float") and not tag.key:
                end = draw(st.sampled_from([tag.lo, tag.hi]))
                set_at(obj, path, int(end) if tag.t == "int" else end)
            elif tag.t == "text":
                set_at(obj, path, draw(st.sampled_from(["x", "é", "🚌", "\x01"])) * tag.max_len)
        whys.append("extreme values")
    for _ in range(rnd.choice([0, 0, 0, 0, 0, 1, 1, 2, 3])):
        options = [(p, t) for p, t in targets(obj, tags) if not any(_related(p, d) for d in done)]
        if not options:
            break
        path, tag = draw(st.sampled_from(options))
        value, verdict, desc = draw(mutations(tag, get_at(obj, path), device, version))
        set_at(obj, path, value)
        done.append(path)
        verdicts.append(verdict)
        whys.append(f"{'.'.join(map(str, path))}: {desc}")
    key_fields = {"event": ("event_id", "phase"), "telemetry": ("msg_id",)}.get(kind, ())
    if key_fields and rnd.random() < 0.06:
        # The key of a message that is a dead letter anyway: the sink still reads it to send the
        # vehicle a receipt, so make it as unreadable as a broken vehicle could.
        name = draw(st.sampled_from(key_fields))
        obj[name] = draw(st.sampled_from(BAD_KEYS))
        verdicts.append(BAD)
        whys.append(f"{name}: {str(obj[name])[:30]!r}")
    if rnd.random() < 0.05:
        names = field_names(kind)
        extra = draw(st.text(max_size=12).filter(lambda k: k not in names))
        obj[extra] = draw(st.sampled_from([1, None, "x", [], {}]))
        verdicts.append(BAD)
        whys.append(f"unknown field {extra!r}")
    style = Style(
        ascii=draw(st.booleans()),
        spaced=draw(st.booleans()),
        order=draw(st.sampled_from(["as-is", "sorted", "reversed"])),
        dup=draw(st.sampled_from(sorted(obj))) if rnd.random() < 0.1 else None,
    )
    if style.dup is not None:
        verdicts.append(EITHER)  # the same value twice: pydantic keeps the last one
        whys.append(f"key {style.dup!r} twice")
    payload = encode(obj, style)
    if rnd.random() < 0.08:
        payload, verdict, desc = draw(payload_op(payload))
        verdicts.append(verdict)
        whys.append(f"payload: {desc}")
    if len(payload) > MAX_BYTES:
        verdicts.append(BAD)  # the sink does not even parse it
        whys.append(f"{len(payload)} bytes")
    topic = valid_topic(device, kind)
    topic_kind: str | None = kind
    if rnd.random() < 0.08:
        how = draw(
            st.sampled_from(["kind", "bad kind", "bad device", "other device", "extra", "short", "slash"])
        )
        if how == "kind":
            topic_kind = draw(st.sampled_from([k for k in KINDS if k != kind]))
            topic = valid_topic(device, topic_kind)
        elif how == "bad kind":
            topic, topic_kind = valid_topic(device, draw(BAD_KINDS)), None
        elif how == "bad device":
            topic, topic_kind = valid_topic(draw(BAD_DEVICES), kind), None
        elif how == "other device":
            other = draw(DEVICES.filter(lambda d: d != device))
            topic = valid_topic(other, kind)
        elif how == "extra":
            extra = draw(st.text(_TOPIC_CHARS, max_size=8))
            topic, topic_kind = (
                draw(st.sampled_from([f"{topic}/{extra}", f"{TOPIC_ROOT}/{extra}/{device}/{kind}"])),
                None,
            )
        elif how == "short":
            topic, topic_kind = (
                draw(st.sampled_from([f"{TOPIC_ROOT}/{device}", f"{TOPIC_ROOT}/{kind}"])),
                None,
            )
        else:
            topic, topic_kind = topic + "/", None
        verdicts.append(BAD)
        whys.append(f"topic {how}")
    key: tuple[Any, ...] | None = None
    if topic_kind == kind == "event":
        key = ("event", _canonical(obj.get("event_id")), obj.get("phase"))
    elif topic_kind == kind == "telemetry":
        key = ("telemetry", _canonical(obj.get("msg_id")))
    elif topic_kind == kind == "status":
        seq = obj.get("seq")  # "7" and 7.0 are read as 7
        if isinstance(seq, (str, float)) and str(seq).removesuffix(".0").isdigit():
            seq = int(str(seq).removesuffix(".0"))
        key = ("status", device, seq, obj.get("state"))
    if key is not None:  # a mutated key field may hold anything: keep it comparable
        key = tuple(k if type(k) in (str, int) else repr(k) for k in key)
    return Msg(topic, payload, worst(*verdicts), topic_kind, key, device, "; ".join(whys))


def _canonical(u: Any) -> str:
    try:
        return str(uuid.UUID(str(u).strip("{}").removeprefix("urn:uuid:")))
    except ValueError:
        return str(u)


ANY_TOPIC = st.one_of(
    st.builds(valid_topic, DEVICES, st.sampled_from(KINDS)),
    st.builds(valid_topic, BAD_DEVICES, st.sampled_from(KINDS)),
    st.builds(valid_topic, DEVICES, BAD_KINDS),
).filter(lambda t: not reserved(t))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def junk_message(draw: st.DrawFn) -> Msg:
    """Arbitrary bytes or arbitrary JSON on any topic: always a dead letter."""
    topic = draw(ANY_TOPIC)
    if draw(st.booleans()):
        payload = draw(st.binary(max_size=300))
        why = "arbitrary bytes"
    else:
        payload = json.dumps(draw(JSON_VALUES)).encode()
        why = "arbitrary JSON"
    return Msg(topic, payload, BAD, why=why)


MESSAGE = st.one_of(model_message(), model_message(), model_message(), junk_message())


@st.composite
def batches(draw: st.DrawFn) -> list[Msg]:
    """20-45 messages, then a few of them sent again verbatim (QoS 1 redeliveries, a vehicle
    resending what got no receipt)."""
    msgs = draw(st.lists(MESSAGE, min_size=20, max_size=45))
    again = draw(st.lists(st.integers(0, len(msgs) - 1), max_size=4))
    out = msgs + [msgs[i] for i in again]
    assert not any(reserved(m.topic) for m in out)
    return out


def anchor_messages() -> list[Msg]:
    """A vehicle with plain valid data: 60 alerts in the last hours, half of them ended,
    telemetry and a status."""
    out: list[Msg] = []
    t0 = now() - timedelta(hours=5)
    for i in range(60):
        start = t0 + timedelta(minutes=5 * i)
        eid = str(uuid.uuid5(NS, f"anchor/{next(_serial)}"))
        base = {
            "v": 1, "event_id": eid, "device_id": ANCHOR, "type": ("microsleep", "drowsy", "yawn")[i % 3],
            "severity": "critical", "state": "MICROSLEEP", "start_time": iso(start),
            "raised_time": iso(start + timedelta(seconds=1)), "start_ms": i * 1000, "start_frame": i * 30,
            "is_drowsy": True, "perclos": (i % 10) / 10, "model_versions": {"eye_state": "1.2.0"},
        }  # fmt: skip
        raised = {**base, "phase": "raised"}
        out.append(Msg(valid_topic(ANCHOR, "event"), json.dumps(raised).encode(), OK, "event",
                       ("event", eid, "raised"), ANCHOR, "anchor"))  # fmt: skip
        if i % 2:
            ended = {
                **base,
                "phase": "ended",
                "end_time": iso(start + timedelta(seconds=3)),
                "duration_ms": 3000,
            }
            out.append(Msg(valid_topic(ANCHOR, "event"), json.dumps(ended).encode(), OK, "event",
                           ("event", eid, "ended"), ANCHOR, "anchor"))  # fmt: skip
    for i in range(40):
        mid = str(uuid.uuid5(NS, f"anchor-tel/{next(_serial)}"))
        tel = {
            "v": 1, "msg_id": mid, "device_id": ANCHOR, "time": iso(t0 + timedelta(minutes=7 * i)),
            "state": "AWAKE", "perclos": (i % 20) / 20, "blink_rate_per_min": 14.0, "blinks": i,
            "baseline_ear": 0.3, "calibrated": True, "is_drowsy": False, "face": True,
        }  # fmt: skip
        out.append(Msg(valid_topic(ANCHOR, "telemetry"), json.dumps(tel).encode(), OK, "telemetry",
                       ("telemetry", mid), ANCHOR, "anchor"))  # fmt: skip
    seq = next(_serial)
    status = {
        "v": 1,
        "device_id": ANCHOR,
        "state": "online",
        "seq": seq,
        "time": iso(now()),
        "version": "1.0",
    }
    out.append(Msg(valid_topic(ANCHOR, "status"), json.dumps(status).encode(), OK, "status",
                   ("status", ANCHOR, seq, "online"), ANCHOR, "anchor"))  # fmt: skip
    return out


# ----------------------------------------------------------------------------- the sink under test


@dataclass
class Snapshot:
    events: set[tuple[Any, ...]]
    telemetry: set[tuple[Any, ...]]
    status: set[tuple[Any, ...]]
    devices: set[str]
    dead: dict[str, tuple[int, str]]  # digest -> (times_seen, reason)
    metrics: dict[str, float]

    @property
    def rows(self) -> set[tuple[Any, ...]]:
        return self.events | self.telemetry | self.status

    @property
    def times_seen(self) -> int:
        return sum(n for n, _ in self.dead.values())


READS = (
    "/events/recent",
    "/events/recent?limit=1000",
    "/events",
    "/events?limit=1000",
    "/events?type=microsleep",
    "/dashboard",
    "/dashboard?hours=2160",
    "/devices",
    "/dead-letters",
    "/dead-letters?limit=1000",
    "/statistics",
    "/metrics",
)


@dataclass
class Ledger:
    """What was sent and what the sink must therefore hold."""

    url: str
    sink: SinkProcess
    pub: Any
    engine: Engine = field(init=False)
    sent: int = 0
    copies_of_rows: int = 0  # resent events/telemetry the sink already had: its duplicates count
    accepted_devices: set[str] = field(default_factory=set)
    with_data: set[str] = field(default_factory=set)  # devices with a stored event or telemetry
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.engine = create_engine(self.url)
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.sink.port}",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=30,
        )
        self.last = self.snapshot()

    def close(self) -> None:
        self.http.close()
        self.engine.dispose()

    def metrics(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        r = self.get("/metrics")
        assert r.status_code == 200, r.text[:300]
        out: dict[str, float] = defaultdict(float)
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                if s.name == "sleepsafe_sink_received_total":
                    out[f"received:{s.labels['kind']}"] += s.value
                    out["committed"] += s.value
                elif s.name == "sleepsafe_sink_dead_letters_total":
                    out["dead"] += s.value
                    out["committed"] += s.value
                elif s.name == "sleepsafe_sink_duplicates_total":
                    out["duplicates"] += s.value
        return dict(out)

    def snapshot(self) -> Snapshot:
        e, t, s, dl = schema.events.c, schema.telemetry.c, schema.status_log.c, schema.dead_letters.c
        with self.engine.connect() as conn:
            events = [("event", a, b) for a, b in conn.execute(select(e.event_id, e.phase))]
            tele = [("telemetry", a) for (a,) in conn.execute(select(t.msg_id))]
            status = [("status", a, b, c) for a, b, c in conn.execute(select(s.device_id, s.seq, s.state))]
            devices = {d for (d,) in conn.execute(select(schema.devices.c.device_id))}
            dead = {d: (int(n), r) for d, n, r in conn.execute(select(dl.digest, dl.times_seen, dl.reason))}
        for rows in (events, tele, status):
            assert len(rows) == len(set(rows)), "a row stored twice"
        return Snapshot(set(events), set(tele), set(status), devices, dead, self.metrics())

    def send(self, batch: list[Msg]) -> None:
        infos = [self.pub.publish(m.topic, m.payload, qos=1) for m in batch]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
        self.sent += len(batch)
        try:
            wait_until(lambda: self.alive() and self.committed() >= self.sent, "commits", 60)
        except AssertionError as err:  # dead or stuck: what the sink said about it
            raise AssertionError(f"{err}; the sink's last complaints: {self.complaints()}") from None
        self.check(batch)

    def get(self, path: str) -> httpx.Response:
        try:
            return self.http.get(path)
        except httpx.TransportError:  # the sink is going down: say why
            code = self.sink.proc.wait(timeout=30)
            raise AssertionError(f"the sink exited {code}: {self.complaints()}") from None

    def committed(self) -> float:
        return self.metrics().get("committed", 0)

    def alive(self) -> bool:
        code = self.sink.proc.poll()
        assert code is None, f"the sink exited {code}"
        return True

    def complaints(self) -> list[dict[str, Any]]:
        return [r for r in self.sink.log if r.get("level") not in ("info", "debug")][-6:]

    def check(self, batch: list[Msg]) -> None:
        before, after = self.last, self.snapshot()
        self.last = after
        assert after.metrics.get("committed", 0) == self.sent, (after.metrics, self.sent)
        problems: list[str] = []
        groups: dict[str, list[Msg]] = {}
        for m in batch:
            groups.setdefault(m.digest, []).append(m)
        new_rows: set[tuple[Any, ...]] = set()
        stats_accepted = 0
        dup_copies = 0
        received: Counter[str] = Counter()
        for digest, ms in groups.items():
            m, n = ms[0], len(ms)
            expect = worst(*(x.expect for x in ms))
            seen = after.dead.get(digest, (0, ""))[0] - before.dead.get(digest, (0, ""))[0]
            reason = after.dead.get(digest, (0, ""))[1]
            if m.key is not None and m.key in before.rows:
                problems.append(f"generator reused a key {m.key}")
            stored = m.key is not None and m.key in after.rows
            if seen not in (0, n):
                fate = f"seen {seen} times as a dead letter of {n} sent"
            elif seen == n and stored:
                fate = "both stored and a dead letter"
            elif seen == n:
                fate = "dead"
            elif m.kind == "stats" or stored:
                fate = "ok"
            else:
                fate = "lost: neither stored nor a dead letter"
            if (
                fate not in ("ok", "dead")
                or (expect == OK and fate != "ok")
                or (expect == BAD and fate != "dead")
            ):
                problems.append(
                    f"expected {expect}, got {fate} (reason: {reason[:300]!r})\n"
                    f"    topic={m.topic!r}\n    payload={m.payload[:600]!r}"
                    f"{'...' if len(m.payload) > 600 else ''} ({len(m.payload)} bytes)\n"
                    f"    mutations: {m.why}"
                )
                continue
            if fate == "ok":
                assert m.device is not None and m.kind is not None
                self.accepted_devices.add(m.device)
                received[m.kind] += n
                if m.kind == "stats":
                    stats_accepted += n
                else:
                    assert m.key is not None
                    new_rows.add(m.key)
                    dup_copies += n - 1
                    if m.kind in ("event", "telemetry"):
                        self.copies_of_rows += n - 1
                        self.with_data.add(m.device)
        assert not problems, f"{len(problems)} messages not accounted for:\n" + "\n".join(problems[:12])
        # The exact accounting: sent = new rows + duplicates + accepted stats + dead-letter sightings.
        grown = after.rows - before.rows
        assert grown == new_rows, (sorted(grown - new_rows)[:5], sorted(new_rows - grown)[:5])
        dead_seen = after.times_seen - before.times_seen
        assert len(batch) == len(grown) + dup_copies + stats_accepted + dead_seen, (
            len(batch), len(grown), dup_copies, stats_accepted, dead_seen,
        )  # fmt: skip
        m0, m1 = before.metrics, after.metrics
        assert m1.get("dead", 0) - m0.get("dead", 0) == dead_seen
        for kind in KINDS:
            got = m1.get(f"received:{kind}", 0) - m0.get(f"received:{kind}", 0)
            assert got == received[kind], (kind, got, received[kind])
        assert after.devices == self.accepted_devices, sorted(after.devices ^ self.accepted_devices)[:10]
        self.check_reads()

    def check_reads(self) -> None:
        """The sink is alive and healthy, and no read endpoint answers with a server error."""
        r = self.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text[:500]
        devices = sorted(self.with_data)[:6]
        paths = [*READS]
        for d in devices:
            paths += [
                f"/events?device={d}",
                f"/dashboard/timeline?device={d}",
                f"/dashboard/timeline?device={d}&hours=2160",
            ]
        for path in paths:
            r = self.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:500])

    def check_totals(self) -> None:
        """/statistics, /devices and /dead-letters agree with the database and the ledger."""
        snap = self.snapshot()
        stats = self.get("/statistics").json()
        rows = stats["rows"]
        assert rows["events"] == len(snap.events) and rows["telemetry"] == len(snap.telemetry)
        assert rows["status_log"] == len(snap.status) and rows["dead_letters"] == len(snap.dead)
        assert rows["devices"] == len(snap.devices) == len(self.accepted_devices)
        ingest = stats["ingest"]
        assert ingest.get("event", 0) == len(snap.events), ingest
        assert ingest.get("telemetry", 0) == len(snap.telemetry), ingest
        assert ingest.get("status", 0) == len(snap.status), ingest
        assert ingest.get("dead_letters", 0) == snap.times_seen, ingest
        assert ingest.get("duplicates", 0) == self.copies_of_rows == snap.metrics.get("duplicates", 0), ingest
        assert {d["device_id"] for d in self.get("/devices").json()} == self.accepted_devices
        dead = self.get("/dead-letters?limit=1000").json()
        assert len(dead) == min(1000, len(snap.dead))
        if len(snap.dead) <= 1000:
            assert sum(d["times_seen"] for d in dead) == snap.times_seen


@pytest.fixture
def sink_and_ledger(broker: Any, db_url: str, tmp_path: Path) -> Iterator[Ledger]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    sink = SinkProcess(
        tmp_path / "sink",
        broker.port,
        db_url,
        **{
            "store.max_payload_bytes": str(MAX_BYTES),
            "api.rate_limit": "1000000/minute",
            "api.dashboard_refresh_s": "1",
        },
    ).start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzz-pub", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    ledger = Ledger(db_url, sink, pub)
    try:
        yield ledger
    finally:
        ledger.close()
        pub.loop_stop()
        pub.disconnect()
        was_alive = sink.proc.poll() is None  # else the test has failed on it already
        code = sink.stop()
        assert code == 0 or not was_alive, f"the sink exited {code}: {sink.log[-5:]}"


def generate(n: int) -> list[list[Msg]]:
    """``n`` batches drawn by hypothesis, up front: its generation is adaptive to how long each
    example takes, so drawing while the sink works would draw other messages on every run."""
    out: list[list[Msg]] = []

    @given(batch=batches())
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # nothing to shrink: the test runs afterwards
        suppress_health_check=list(HealthCheck),
    )
    def collect(batch: list[Msg]) -> None:
        out.append(batch)

    collect()
    assert len(out) >= n // 2, len(out)
    return out


def test_mqtt_ingest_fuzz(sink_and_ledger: Ledger, tmp_path: Path) -> None:
    """Each batch in turn (the sink's state carries over): exact accounting, sink alive and
    healthy, every read endpoint 200; then totals, and the dashboard drawn in Chromium."""
    ledger = sink_and_ledger
    ledger.send(anchor_messages())
    for batch in generate(16):
        ledger.send(batch)
    ledger.check_totals()
    assert ledger.sent >= 400, ledger.sent
    draw_dashboard(ledger, tmp_path / "screens")
    ledger.alive()
    ledger.check_reads()  # still up and healthy after all of it


def draw_dashboard(ledger: Ledger, shots: Path) -> None:
    """The dashboard in headless Chromium (Debian's), as tests/test_fleet.py drives it."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        _unavailable("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    from tests.test_fleet import assert_charts_drawn

    shots.mkdir()
    with sync_playwright() as p:
        browser = launch_chromium(p, chromium)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{ledger.sink.port}/ui#token={API_TOKEN}")
        page.wait_for_function("Number(document.body.dataset.refreshes) >= 1", timeout=30_000)
        assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
        assert page.locator("#n-devices").text_content() == str(len(ledger.accepted_devices))
        before = int(page.evaluate("Number(document.body.dataset.refreshes)"))
        page.select_option("#device", ANCHOR)
        page.wait_for_function(f"Number(document.body.dataset.refreshes) > {before}", timeout=30_000)
        assert_charts_drawn(page, shots)
        assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
        text = page.locator("body").inner_text()
        assert "HTTP 500" not in text and "HTTP 5" not in text, text[:500]
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        browser.close()
    assert errors == [], errors
