"""MediaPipe's native info/warning lines are dropped from stderr; everything else gets through."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import os, sys, threading
from edge_agent.perception.nativelog import filter_native_logs
first = filter_native_logs()
assert filter_native_logs() == first  # installed once, then a no-op
def native():  # as MediaPipe's own threads write: straight to fd 2
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"W0000 00:00:1796184472.097668    6193 inference_feedback.cc:114] Feedback manager\n")
    os.write(2, b"I0000 00:00:1796184472.1    6193 gl_context.cc:357] GL version: 3.2\n")
    os.write(2, b"E0000 00:00:1796184472.2    6193 calculator_graph.cc:887] a real native error\n")
    os.write(2, b"some other tool's line\n")
t = threading.Thread(target=native); t.start(); t.join()
print("python's own stderr line", file=sys.stderr)
os.write(2, b"E0000 00:00:1.0    1 end.cc:1] the last line before exit\n")
"""


def _run(env: dict[str, str] | None = None) -> str:
    import os

    p = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert p.returncode == 0, p.stderr
    return p.stderr


def test_native_noise_dropped_errors_and_python_kept() -> None:
    err = _run()
    assert "python's own stderr line" in err
    assert "a real native error" in err
    assert "some other tool's line" in err
    assert "the last line before exit" in err  # drained at exit, not lost in the pipe
    for noise in ("XNNPACK", "absl::InitializeLog", "Feedback manager", "GL version"):
        assert noise not in err, err


def test_everything_kept_when_asked() -> None:
    err = _run({"SLEEPSAFE_NATIVE_LOGS": "all"})
    assert "Feedback manager" in err and "XNNPACK" in err


def test_a_fatal_native_line_survives_the_abort_that_follows() -> None:
    """MediaPipe's "F... Check failed" is followed by abort(): the line must still get out."""
    script = (
        "import os\n"
        "from edge_agent.perception.nativelog import filter_native_logs\n"
        "assert filter_native_logs()\n"
        "os.write(2, b'F0000 00:00:1.0    7 graph.cc:42] Check failed: the last words\\n')\n"
        "os.abort()\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode != 0 and "Check failed: the last words" in p.stderr, (p.returncode, p.stderr)
