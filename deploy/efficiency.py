"""The spike-efficiency report: firing rates, operations per synaptic layer and an energy estimate.

Operations come from :class:`~snnkit.deploy.costs.Topology` and a :class:`~snnkit.deploy.costs.Tally`
of one evaluation run: a layer fed spikes or spike counts costs its exact accumulates (ACs); a layer
fed analog values costs one multiply-accumulate (MAC) per real synapse each time the graph computes
it (``computed_once`` names those it computes once per sample, the others run at every step). Energy
uses the 45 nm figures of Horowitz (ISSCC 2014).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Collection

from .costs import ANALOG, Tally, Topology

# (accumulate, multiply-accumulate) energy in pJ, 45 nm
ENERGY_PJ = {"fp32": (0.9, 4.6), "fp16": (0.4, 1.5), "int8": (0.03, 0.23)}


def assumptions() -> list[str]:
    return [
        "energy per operation from Horowitz, ISSCC 2014 (45 nm): accumulate / multiply-accumulate "
        + ", ".join(f"{k} {ac} / {mac} pJ" for k, (ac, mac) in ENERGY_PJ.items()),
        "a spike costs one accumulate per real synapse it drives (padding excluded, stride respected)",
        "a count of spikes (after average pooling, residual addition) costs one accumulate per spike it "
        "counts, as an event-driven chip routes each spike; an average pool is its sum in spikes",
        "a layer fed analog values costs one multiply-accumulate per real synapse each time it is computed",
        "the ANN is the same network evaluated once, one multiply-accumulate per real synapse",
        "neuron updates (neurons × T) are counted but not in the energy; memory traffic, biases, "
        "pooling and residual additions are ignored",
    ]


@dataclass(frozen=True)
class SpikingRow:
    name: str
    label: str
    neurons: int
    spikes_per_sample: float
    firing_rate: float  # spikes / (neurons × T)


@dataclass(frozen=True)
class SynapseRow:
    name: str
    label: str
    fed_by: str  # "spikes", "spike counts" or "analog"
    sources: tuple[str, ...]  # labels of the spike sources feeding it
    runs_per_sample: int  # times the layer is computed per sample: T steps, or once
    acs_per_sample: float  # spike-driven accumulates (0 for an analog-fed layer)
    macs_per_sample: float  # multiply-accumulates (0 for a spike-fed layer)
    ann_macs: int  # the same layer in the ANN: its real synapses

    def energy_pj(self, preset: str) -> float:
        e_ac, e_mac = ENERGY_PJ[preset]
        return self.acs_per_sample * e_ac + self.macs_per_sample * e_mac


def efficiency_report(topo: Topology, tally: Tally, computed_once: Collection[str] = (),
                      model: str = "", dataset: str = "") -> dict:
    """The report of one run as plain, JSON-ready data."""
    T, samples = tally.T, tally.samples
    spiking = []
    for s in topo.spiking:
        spikes = float(tally.spikes[s.name].sum()) / samples
        spiking.append(SpikingRow(s.name, s.label, s.neurons, spikes, spikes / (s.neurons * T)))
    acs = topo.accumulates(tally)
    synaptic = []
    for s in topo.synaptic:
        runs = 1 if s.name in computed_once else T
        analog = s.fed_by == ANALOG
        synaptic.append(SynapseRow(s.name, s.label, s.fed_by, s.sources, runs, 0.0 if analog else acs[s.name],
                                   float(s.synapses * runs) if analog else 0.0, s.synapses))
    total_acs = sum(r.acs_per_sample for r in synaptic)
    total_macs = sum(r.macs_per_sample for r in synaptic)
    ann = sum(r.ann_macs for r in synaptic)
    energy = {}
    for preset, (_, e_mac) in ENERGY_PJ.items():
        snn = sum(r.energy_pj(preset) for r in synaptic)
        energy[preset] = {"snn_pj": snn, "ann_pj": ann * e_mac, "snn_over_ann": snn / (ann * e_mac)}
    spikes = sum(r.spikes_per_sample for r in spiking)
    neurons = sum(r.neurons for r in spiking)
    return {
        "model": model, "dataset": dataset, "T": T, "samples": samples,
        "firing_rate": spikes / (neurons * T), "spikes_per_sample": spikes,
        "acs_per_sample": total_acs, "macs_per_sample": total_macs, "ann_macs_per_sample": ann,
        "neuron_updates_per_sample": neurons * T,
        "energy": energy,
        "spiking_layers": [asdict(r) for r in spiking],
        "synaptic_layers": [{**asdict(r), "energy_pj": {p: r.energy_pj(p) for p in ENERGY_PJ}} for r in synaptic],
        "assumptions": assumptions(),
    }
