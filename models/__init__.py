"""The models' PyTorch side: the eye-state CNN and the temporal GRU, their data preparation from
the labelled clips, training and scoring (``sleepsafe-train``). Training only: the vehicle runs
the exported ONNX files through onnxruntime and never imports torch."""
