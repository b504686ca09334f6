"""The ONNX models on the vehicle: onnxruntime sessions with provider fallback (TensorRT, CUDA,
CPU), hash-checked model files, and refusals that fall back to EAR alone. Never torch."""
