"""The offline ONNX export (``sleepsafe-export``): a checkpoint to ONNX with parity against torch,
fp16 and int8 variants, and the model card beside each file."""
