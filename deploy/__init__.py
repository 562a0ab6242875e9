"""Deployment: time-unrolled ONNX export, inference parity and spike-efficiency reports.

Nothing here imports the training code (``snnkit.methods``, ``snnkit.training``)."""

OPSET = 18  # the default ONNX opset of exported graphs
OPSETS = range(17, 21)  # onnxruntime 1.31 loads ≤ 26; these are the tested, widely supported ones
