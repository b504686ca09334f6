"""Rolling windows over stream time: PERCLOS, and counts of recent occurrences."""

from __future__ import annotations

from collections import deque


class Perclos:
    """PERCLOS (P80): the time-weighted share of the window in which the eyes were ≥ 80 %
    closed, over face frames only, with running sums (O(1) a frame)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._q: deque[tuple[float, float, bool]] = deque()  # (t, dt, closed)
        self.total_s = 0.0  # face time in the window
        self._closed_s = 0.0
        self.value = 0.0

    def add(self, t: float, dt: float, closed: bool) -> None:
        self._q.append((t, dt, closed))
        self.total_s += dt
        if closed:
            self._closed_s += dt
        self.expire(t)

    def expire(self, t: float) -> None:
        horizon = t - self.window_s
        q = self._q
        while q and q[0][0] < horizon:
            _, dt, closed = q.popleft()
            self.total_s -= dt
            if closed:
                self._closed_s -= dt
        self.value = self._closed_s / self.total_s if self.total_s > 1e-9 else 0.0


class Recent:
    """Times of something (blinks, yawns, microsleeps) within the last ``window_s``."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def add(self, t: float) -> None:
        self._times.append(t)

    def expire(self, t: float) -> None:
        horizon = t - self.window_s
        while self._times and self._times[0] < horizon:
            self._times.popleft()

    def __len__(self) -> int:
        return len(self._times)

    def __bool__(self) -> bool:
        return bool(self._times)
