"""The neuron-set types and the ``neurons.json`` format, as the neurons stage names them.

They live in :mod:`neurorit_lens.neuron_sets`, below every stage (hooks take sets, saved-model
folders record them); this module re-exports them for code that imports them from here.
"""

from neurorit_lens.neuron_sets import (
    SET_NAMES,
    MiningMeta,
    Neuron,
    NeuronSet,
    exclusive_sets,
    load_neuron_sets,
    read_neurons_file,
    save_neuron_sets,
)

__all__ = ["SET_NAMES", "MiningMeta", "Neuron", "NeuronSet", "exclusive_sets", "load_neuron_sets",
           "read_neurons_file", "save_neuron_sets"]
