"""The spike-efficiency report: firing rates, synaptic operations and an energy estimate.

Synaptic operations (SOPs) per sample of a conv/linear fed by spikes = the spikes of its source
layer over all T steps × that layer's fan-out (:meth:`Topology.fan_out`); one fed analog values
counts multiply-accumulates instead. Energy uses the 45 nm figures of Horowitz (ISSCC 2014).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .costs import Topology

# (accumulate, multiply-accumulate) energy in pJ, 45 nm
ENERGY_PJ = {"fp32": (0.9, 4.6), "fp16": (0.4, 1.5), "int8": (0.03, 0.23)}


def assumptions(kind: str) -> list[str]:
    analog = ("counted once per sample (static input is the same at every step)" if kind == "static"
              else "counted at every step (event input changes each step)")
    return [
        "energy per operation from Horowitz, ISSCC 2014 (45 nm): accumulate / multiply-accumulate "
        + ", ".join(f"{k} {ac} / {mac} pJ" for k, (ac, mac) in ENERGY_PJ.items()),
        "a spike costs one accumulate per synapse it drives (fan-out = MACs of the layers it feeds "
        "per neuron, padding included as in FLOP counts)",
        f"layers fed analog values cost multiply-accumulates, {analog}",
        "the ANN is the same network run once with every synapse a multiply-accumulate",
        "memory traffic, neuron updates, biases, pooling and residual additions are ignored",
    ]


@dataclass(frozen=True)
class SpikingRow:
    name: str
    neurons: int
    spikes_per_sample: float
    firing_rate: float  # spikes / (neurons × T)


@dataclass(frozen=True)
class SynapseRow:
    name: str
    source: str  # the spiking layer feeding it, or "input"
    op: str  # "AC" (spike-driven) or "MAC" (analog input)
    ops_per_sample: float
    ann_macs: int


def efficiency_report(topo: Topology, spike_counts: np.ndarray, T: int, kind: str) -> dict:
    """``spike_counts`` ``[N, L]`` over N samples -> the report as plain, JSON-ready data."""
    spikes = np.asarray(spike_counts, dtype=np.float64).mean(axis=0)
    spiking = [SpikingRow(n, k, float(s), float(s) / (k * T))
               for n, k, s in zip(topo.layer_names, topo.neurons, spikes)]
    analog_steps = 1 if kind == "static" else T
    synapses = []
    for s in topo.synapses:
        if s.source is None:
            synapses.append(SynapseRow(s.name, "input", "MAC", float(s.macs * analog_steps), s.macs))
        else:
            src = topo.layer_names[s.source]
            sops = spikes[s.source] * s.macs / topo.neurons[s.source]
            synapses.append(SynapseRow(s.name, src, "AC", float(sops), s.macs))
    acs = sum(r.ops_per_sample for r in synapses if r.op == "AC")
    macs = sum(r.ops_per_sample for r in synapses if r.op == "MAC")
    ann = sum(r.ann_macs for r in synapses)
    energy = {p: {"snn_pj": acs * e_ac + macs * e_mac, "ann_pj": ann * e_mac,
                  "snn_over_ann": (acs * e_ac + macs * e_mac) / (ann * e_mac)}
              for p, (e_ac, e_mac) in ENERGY_PJ.items()}
    total_spikes = float(spikes.sum())
    return {
        "T": T, "samples": int(np.asarray(spike_counts).shape[0]),
        "firing_rate": total_spikes / (sum(topo.neurons) * T),
        "spikes_per_sample": total_spikes,
        "sops_per_sample": acs, "analog_macs_per_sample": macs, "ann_macs_per_sample": ann,
        "energy": energy,
        "spiking_layers": [asdict(r) for r in spiking],
        "synaptic_layers": [asdict(r) for r in synapses],
        "assumptions": assumptions(kind),
    }
