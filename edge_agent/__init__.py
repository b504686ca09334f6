"""SleepSafe Edge agent: on-vehicle driver drowsiness detection with local alerts."""

import os as _os

__version__ = "0.1.0"

# Native libraries (FFmpeg, OpenCV, MediaPipe's glog/absl) print their own warnings to stderr;
# our errors are one clear line each, so keep theirs down unless the user asks for them.
for _key, _value in (
    ("OPENCV_LOG_LEVEL", "ERROR"),
    ("OPENCV_FFMPEG_LOGLEVEL", "-8"),
    ("GLOG_minloglevel", "2"),
    ("TF_CPP_MIN_LOG_LEVEL", "2"),
):
    _os.environ.setdefault(_key, _value)
