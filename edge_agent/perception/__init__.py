"""From the camera to numbers: capture (its own thread, newest frame wins), MediaPipe landmarks,
the per-frame features (EAR, openness, MAR, head pose, gaze, iris visibility) and eye crops."""
