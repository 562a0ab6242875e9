"""Runs the Triton spike-pass kernel under Triton's interpreter on CPU tensors, in a fresh process
(``TRITON_INTERPRET`` must be set before ``triton`` is first imported):

    TRITON_INTERPRET=1 python tests/triton_interpret.py CASES.pt OUTPUTS.pt

CASES.pt maps a case name to (currents [T, ...], NeuronParams as a dict); OUTPUTS.pt gets the
kernel's (spikes, r, g) for each.
"""
import os
import sys

import torch

from snnkit.neuron import NeuronParams
from snnkit.methods.rate.triton_lif import triton_multistep_record

if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1"
    cases = torch.load(sys.argv[1], weights_only=True)
    outputs = {name: triton_multistep_record(x, NeuronParams(**p), NeuronParams(**p).make_surrogate())
               for name, (x, p) in cases.items()}
    torch.save(outputs, sys.argv[2])
