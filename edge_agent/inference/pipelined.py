"""The eye-state model one frame behind, on a worker thread, for shadow mode.

In shadow mode the model decides nothing in its own frame, so it need not hold the frame up:
its crops and inference for frame k run on a worker thread while frame k+1's landmarks are
found (onnxruntime and OpenCV release the GIL), and the result is collected right after them.
The result always belongs to frame k and is always collected before frame k+1 is judged, so a
replay gives the same records every time, however the threads are scheduled.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.inference.runtime import EyeStateModel


class PipelinedEyeState:
    def __init__(self, model: EyeStateModel) -> None:
        self.model = model
        self._cv = threading.Condition()
        self._job: tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64]] | None = None
        self._result: float | BaseException | None = None
        self._busy = False
        self._closed = False
        self.seconds = 0.0  # worker time of the last result (for the stage timings)
        self._thread = threading.Thread(target=self._work, name="eye-state-shadow", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> bool:
        return self._busy

    def submit(self, frame: npt.NDArray[np.uint8], points: npt.NDArray[np.float64]) -> None:
        """Start on a frame (the frame is read, never written); one frame at a time."""
        with self._cv:
            if self._busy:
                raise RuntimeError("submit() before the previous result() was collected")
            self._job, self._result, self._busy = (frame, points), None, True
            self._cv.notify_all()

    def result(self, timeout: float | None = None) -> float:
        """P(closed) of the submitted frame, both eyes averaged; waits for it if need be
        (TimeoutError after ``timeout`` seconds)."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._result is not None or not self._busy, timeout=timeout):
                raise TimeoutError(f"the shadow eye-state model gave no result in {timeout} s")
            res, self._result, self._busy = self._result, None, False
        if isinstance(res, BaseException):
            raise res
        if res is None:
            raise RuntimeError("no frame was submitted")
        return res

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._busy = False  # a job not yet picked up is dropped; result() no longer waits
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def _work(self) -> None:
        import time

        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._job is not None or self._closed)
                if self._closed:
                    return
                job, self._job = self._job, None
            assert job is not None
            t0 = time.perf_counter()
            out: Any
            try:
                out = self.model.closed_prob(*job)
            except Exception as err:  # noqa: BLE001 - handed to the frame thread, raised there
                out = err
            self.seconds = time.perf_counter() - t0
            with self._cv:
                self._result = out
                self._cv.notify_all()
