"""MediaPipe's native start-up chatter, filtered out of stderr.

MediaPipe's C++ graph (absl logging) and TensorFlow Lite write info and warning lines straight
to file descriptor 2, from their own threads, at start-up and on the first frames with a face
("Created TensorFlow Lite XNNPACK delegate", "Feedback manager requires a model with a single
signature", "Using NORM_RECT without IMAGE_DIMENSIONS"). ``GLOG_minloglevel`` does not reach
absl's logger in mediapipe 0.10.x, and redirecting fd 2 only around start-up misses the lines
those threads write later.  So fd 2 becomes a pipe for the life of the process: a small filter
process drops native info/warning lines and passes everything else on (native errors and fatal
lines included, even when abort() follows), while Python's own ``sys.stderr`` (structlog,
tracebacks) keeps writing to the original stderr directly.

The pipe's write end is non-blocking: if the filter ever fell behind, a native log line is
dropped rather than a MediaPipe thread (and the frame loop with it) stalled.
``SLEEPSAFE_NATIVE_LOGS=all`` keeps every line, for debugging MediaPipe itself.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import subprocess
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
_installed: list[subprocess.Popen[bytes]] = []  # the filter process, once installed

# The filter runs in a child process, not a thread: a fatal native line ("F... Check failed")
# is followed at once by abort(), which would take a thread down before it forwarded the line;
# the child outlives its parent and drains the pipe to its end.
_FILTER = (
    "import re, sys\n"
    "noise = re.compile(sys.argv[1].encode('latin-1'))\n"
    "out = sys.stdout.buffer\n"
    "for line in sys.stdin.buffer:\n"
    "    if not noise.match(line):\n"
    "        out.write(line); out.flush()\n"
)


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
        r, w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _FILTER, NOISE.pattern.decode("latin-1")],
                stdin=r,
                stdout=keep,
                start_new_session=True,  # Ctrl-C on the terminal is the agent's, not the filter's
            )
        except OSError:
            os.close(r)
            os.close(w)
            os.close(keep)
            return False
        os.close(r)
        # Python's own stderr (structlog, tracebacks) keeps the original stream, directly.
        sys.stderr = os.fdopen(
            keep, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace"
        )
        os.dup2(w, 2)
        os.close(w)
        os.set_blocking(2, False)
        atexit.register(_drain, proc, keep)
        _installed.append(proc)
        return True


def _drain(proc: subprocess.Popen[bytes], keep: int) -> None:
    """At exit: fd 2 back to the original stderr (closing the pipe's last write end here), and
    a moment for the filter to pass on what is still in the pipe."""
    try:
        os.dup2(keep, 2)
    except OSError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):  # a child of ours holds the pipe: it drains later
        proc.wait(timeout=2.0)
