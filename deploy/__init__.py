"""Deployment: time-unrolled ONNX export, inference parity and spike-efficiency reports.

Nothing here imports the training code (``snnkit.methods``, ``snnkit.training``)."""
