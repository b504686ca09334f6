"""SleepSafe Edge agent: on-vehicle driver drowsiness detection with local alerts.

Frames (OpenCV) → MediaPipe landmarks → features → optional ONNX models → the drowsiness
policy (``detector``) → local alert outputs, the journal and MQTT telemetry through a spool.
"""

import os as _os

# Native libraries (FFmpeg, OpenCV, MediaPipe's glog/absl) print their own warnings to stderr;
# our errors are one clear line each, so keep theirs down unless the user asks for them.
for _key, _value in (
    ("OPENCV_LOG_LEVEL", "ERROR"),
    ("OPENCV_FFMPEG_LOGLEVEL", "-8"),
    ("GLOG_minloglevel", "2"),
    ("TF_CPP_MIN_LOG_LEVEL", "2"),
):
    _os.environ.setdefault(_key, _value)
