"""The hashed locks in requirements/ cover what pyproject.toml asks for, so `make` installs from
them alone (`make lock` refreshes them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
# Installed by its pin from the CPU wheel on local disk, outside the hashed lock (see Makefile).
UNHASHED = {"torch"}


def read_lock(path: Path) -> dict[str, tuple[Version, int]]:
    """name → (pinned version, number of hashes)."""
    pins: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m:
            name = canonicalize_name(m.group(1))
            assert name not in pins, f"{path.name}: {name} pinned twice"
            pins[name] = (Version(m.group(2)), 0)
        elif "--hash=sha256:" in line and name:
            v, n = pins[name]
            pins[name] = (v, n + 1)
    return pins


def wanted(extras: list[str]) -> list[Requirement]:
    """The project's requirements with ``extras`` (and the extras they name), for Linux and
    this Python."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo, seen, out = list(extras), set(), [Requirement(r) for r in project["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for raw in project["optional-dependencies"][extra]:
            req = Requirement(raw)
            if canonicalize_name(req.name) == canonicalize_name(project["name"]):
                todo.extend(req.extras)
            else:
                out.append(req)
    return [r for r in out if r.marker is None or r.marker.evaluate()]


@pytest.mark.parametrize(("lock", "extras"), [("run.txt", ["edge"]), ("dev.txt", ["dev"])])
def test_lock_pins_and_hashes_every_requirement(lock: str, extras: list[str]) -> None:
    pins = read_lock(LOCKS / lock)
    unhashed = [n for n, (_, hashes) in pins.items() if hashes == 0]
    assert not unhashed, f"{lock}: pinned without a hash: {unhashed}"
    for req in wanted(extras):
        name = canonicalize_name(req.name)
        if name in UNHASHED:
            assert name not in pins, f"{lock}: {name} comes from local disk, not the lock"
            continue
        assert name in pins, f"{lock}: {req} is not locked: run 'make lock'"
        version, _ = pins[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock}: {name}=={version} does not satisfy {req}: run 'make lock'"
        )


def test_run_lock_agrees_with_dev_lock() -> None:
    """`make run` then `make test` on one venv must not reinstall anything at another version."""
    run, dev = read_lock(LOCKS / "run.txt"), read_lock(LOCKS / "dev.txt")
    assert set(run) <= set(dev)
    assert {n: v for n, (v, _) in run.items()} == {n: dev[n][0] for n in run}


def test_make_installs_only_from_the_locks() -> None:
    """Every pip install in the Makefile is a hashed lock, the project itself without its
    dependencies, or the one unhashed pin."""
    text = (REPO / "Makefile").read_text()
    installs = [line.strip() for line in text.splitlines() if "$(PIP) install" in line]
    assert installs
    for line in installs:
        ok = ("--require-hashes --no-deps -r $(LOCK_" in line) or ("--no-deps" in line)
        assert ok or "uv" in line, line
