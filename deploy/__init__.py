"""Deployment: ONNX graphs (time-unrolled, streaming, int8) and NIR, inference parity, spike-efficiency reports.

Nothing here imports the training code (``snnkit.methods``, ``snnkit.training``)."""

OPSET = 18  # the default ONNX opset of exported graphs
OPSETS = range(17, 21)  # onnxruntime 1.31 loads ≤ 26; these are the tested, widely supported ones
MAX_ACCURACY_DROP = 0.005  # the default gate of an int8 graph: its accuracy against float32's, 0.5 pp
MAX_T = 4096  # the most time steps a graph may run (the papers' longest runs are a few hundred)
