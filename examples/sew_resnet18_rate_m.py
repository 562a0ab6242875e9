# example: a SpikingJelly SEW-ResNet-18 trained with rate_m, exported and checked
import torch

import snnkit

# CIFAR-10-shaped data (3×32×32 images, 10 classes); put your own normalised tensors here.
x, y = torch.rand(4, 3, 32, 32), torch.arange(4) % 10
snnkit.tensor_data("my_cifar10", train=(x, y), test=(x, y), classes=10)

cfg = snnkit.configure(
    model={"name": "spikingjelly:sew_resnet18",
           "kwargs": {"cnf": "ADD", "num_classes": 10,
                      "spiking_neuron": {"type": "LIFNode", "tau": 2.0, "detach_reset": True}}},
    data={"name": "my_cifar10", "batch_size": 4},
    method={"name": "rate_m", "T": 4},
    optim={"epochs": 1},
    run={"out_dir": "runs", "device": "cpu"},
)
run = snnkit.train(cfg)  # one step; a run directory with checkpoint.pt, as `snnkit train` writes
graph = snnkit.export(run.run_dir)  # runs/<run>/model.onnx, the time-unrolled graph, checked as it is made
result = snnkit.evaluate(run.run_dir, onnx=graph.path)  # onnxruntime against PyTorch, spike by spike
print(f"parity {'PASS' if result.parity.passed else 'FAIL'}, accuracy {result.accuracy:.2%}")
assert result.parity.passed
