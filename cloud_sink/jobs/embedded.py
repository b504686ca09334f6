"""The worker the sink starts beside itself (``jobs.worker``, the default), so a sink needs
nothing else started to retrain: ``python -m trainer`` as a child process, given the sink's own
configuration on its stdin (secrets included, never on a command line), and restarted if it
dies: a crash in training never takes ingest down with it, nor leaves jobs unrun.  The job of a
worker that died, or had to be killed at stop, is given up at once (queued again while it has
attempts left), instead of when its heartbeat goes stale.

The sink imports nothing of the trainer (it may be installed without torch): where the training
packages are missing, it says so once and runs without a worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from importlib.util import find_spec
from typing import Any

import structlog
from pydantic import SecretStr

from ..config import SinkConfig
from ..store import Store, one_line
from .queue import JobQueue, worker_name

log = structlog.get_logger(__name__)

TRAINING_PACKAGES = ("torch", "mediapipe", "onnx", "mlflow")


def missing_training_packages() -> str | None:
    """Why this machine cannot run jobs, or None: a worker trains and exports models."""
    missing = [m for m in TRAINING_PACKAGES if find_spec(m) is None]
    if not missing:
        return None
    return f"{', '.join(missing)} not installed: a worker trains models (pip install 'sleepsafe[train,sink]')"


def config_json(cfg: SinkConfig) -> str:
    """The configuration as the child reads it back, secrets in the clear (it goes to a pipe)."""

    def reveal(o: Any) -> Any:
        if isinstance(o, SecretStr):
            return o.get_secret_value()
        return str(o)

    return json.dumps(cfg.model_dump(), default=reveal)


class EmbeddedWorker:
    RESTART_S = 5.0

    def __init__(self, cfg: SinkConfig, store: Store | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.unavailable = missing_training_packages()
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._supervise, name="jobs-worker", daemon=True)

    def start(self) -> EmbeddedWorker:
        if self.unavailable:
            log.warning("jobs_worker_unavailable", reason=self.unavailable)
            return self
        self._spawn()
        self._watch.start()
        return self

    def _spawn(self) -> None:
        p = subprocess.Popen(
            [sys.executable, "-m", "trainer", "--config-stdin", "--parent-pid", str(os.getpid())],
            stdin=subprocess.PIPE,
        )
        assert p.stdin is not None
        p.stdin.write(config_json(self.cfg).encode())
        p.stdin.close()
        self.process = p
        log.info("jobs_worker_started", pid=p.pid)

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            p = self.process
            if p is None or p.poll() is None or self._stop.is_set():
                continue
            log.error("jobs_worker_died", pid=p.pid, exitcode=p.returncode, restart_in_s=self.RESTART_S)
            self._hand_back(p.pid, f"its process {p.pid} died (exit code {p.returncode})")
            if self._stop.wait(self.RESTART_S):
                return
            try:
                self.restarts += 1
                self._spawn()
                self.last_error = None
            except Exception as err:  # noqa: BLE001 - keep supervising; the next round tries again
                self.last_error = one_line(err)
                log.error("jobs_worker_spawn_failed", error=self.last_error)

    def _hand_back(self, pid: int, reason: str) -> None:
        """Give up the jobs the dead worker held (it cannot finish them)."""
        if self.store is None:
            return
        try:
            ids = JobQueue(self.store).lost_worker(worker_name(pid), reason, self.cfg.jobs.max_attempts)
        except Exception as err:  # noqa: BLE001 - the heartbeat goes stale and recovery does it
            log.error("jobs_hand_back_failed", pid=pid, error=one_line(err))
            return
        if ids:
            log.warning("jobs_handed_back", pid=pid, jobs=ids, reason=reason)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.alive and self.process else None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: the worker hands its job back to the queue and exits; killed after ``timeout``."""
        self._stop.set()
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("jobs_worker_killed", pid=p.pid, after_s=timeout)
            p.kill()
            p.wait(5)
            self._hand_back(p.pid, f"its process {p.pid} was killed at sink stop after {timeout:g} s")
