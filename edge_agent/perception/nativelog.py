"""MediaPipe's native start-up chatter, filtered out of stderr.

MediaPipe's C++ graph (absl logging) and TensorFlow Lite write info and warning lines straight
to file descriptor 2, from their own threads, at start-up and on the first frames with a face
("Created TensorFlow Lite XNNPACK delegate", "Feedback manager requires a model with a single
signature", "Using NORM_RECT without IMAGE_DIMENSIONS"). ``GLOG_minloglevel`` does not reach
absl's logger in mediapipe 0.10.x, and redirecting fd 2 only around start-up misses the lines
those threads write later.  So fd 2 becomes a pipe for the life of the process: a small thread
drops native info/warning lines and passes everything else on (native errors and fatal lines
included), while Python's own ``sys.stderr`` (structlog, tracebacks) keeps writing to the
original stderr directly, so nothing of ours can be lost in the pipe at exit.

The pipe's write end is non-blocking: if the filter ever fell behind, a native log line is
dropped rather than a MediaPipe thread (and the frame loop with it) stalled.
``SLEEPSAFE_NATIVE_LOGS=all`` keeps every line, for debugging MediaPipe itself.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# absl/glog lines of severity I or W ("W0000 00:00:1796184472.097668    6193 file.cc:114] ...",
# the time field as absl writes it before InitializeLog), and TFLite's and absl's start-up lines.
NOISE = re.compile(
    rb"^(?:[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "
    rb"|INFO: Created TensorFlow Lite"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)

_lock = threading.Lock()
_installed: list[threading.Thread] = []  # the filter thread, once installed


def filter_native_logs() -> bool:
    """Install the filter once per process; False where it does not apply: stderr is not
    file descriptor 2 (a test capturing output, an embedding application), or it was asked
    to keep every line."""
    with _lock:
        if _installed:
            return True
        if os.environ.get("SLEEPSAFE_NATIVE_LOGS", "").lower() == "all":
            return False
        try:
            if sys.stderr is None or sys.stderr.fileno() != 2:
                return False
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
            return False
        sys.stderr.flush()
        keep = os.dup(2)
        sys.stderr = os.fdopen(
            keep, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace"
        )
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        os.set_blocking(2, False)
        t = threading.Thread(target=_forward, args=(r, keep), name="native-log-filter", daemon=True)
        t.start()
        atexit.register(_drain, t, keep)
        _installed.append(t)
        return True


def _forward(r: int, keep: int) -> None:
    with os.fdopen(r, "rb") as src:
        for line in src:
            if NOISE.match(line):
                continue
            try:
                os.write(keep, line)
            except OSError:  # the original stderr is gone (closed terminal): nothing to tell
                return


def _drain(t: threading.Thread, keep: int) -> None:
    """At exit: fd 2 back to the original stderr (closing the pipe's only write end), and the
    lines still in the pipe forwarded before the process ends."""
    try:
        os.dup2(keep, 2)
    except OSError:
        return
    t.join(timeout=2.0)
