"""The retraining worker: claims jobs queued in the sink's database (cloud_sink.jobs), exports
the labelled fleet data, trains with models/, exports with export/, gates the candidate against
the registry's @champion and records it all in MLflow.  It needs the training packages (torch,
mediapipe, onnx); the sink itself never imports it."""
