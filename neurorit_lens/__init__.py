"""neurorit_lens: Neuro-RIT on TransformerLens.

Find the MLP neurons that process relevant vs irrelevant retrieved passages, test what
they do causally, and tune at neuron and layer level for noise-robust RAG.

The pipeline, one subpackage per stage (imports flow one way, left to right; the top-level
config, io, hooks, objective, statistics and tl_backend sit below every stage)::

    data -> models -> neurons -> distributed -> ablation / training -> evaluation -> viz -> runner -> cli

The public API is re-exported here (``import neurorit_lens as nrl``)::

    model = nrl.load_model()
    ex = nrl.load_examples("embedded").examples
    mined = nrl.mine(model, ex[:8], nrl.MiningConfig(method="grad_x_act"))
"""

__version__ = "0.1.0"

from neurorit_lens.ablation.controls import ablation_hooks
from neurorit_lens.ablation.measure import run_ablation
from neurorit_lens.ablation.result import AblationResult
from neurorit_lens.config import (
    AblationConfig,
    DataConfig,
    EvalConfig,
    MiningConfig,
    RunConfig,
    TrainConfig,
)
from neurorit_lens.data import build_instances, load_examples, render_prompts, split_examples
from neurorit_lens.evaluation.evaluate import EvalResult, evaluate
from neurorit_lens.hooks import mean_ablation, neuron_hooks, scale_ablation, zero_ablation
from neurorit_lens.models import load_model
from neurorit_lens.models.export import export_hf
from neurorit_lens.neuron_sets import Neuron, NeuronSet, load_neuron_sets
from neurorit_lens.neurons.attribution import attribute
from neurorit_lens.neurons.mining import MiningResult, mine
from neurorit_lens.runner import run
from neurorit_lens.training.methods import TrainResult, train
from neurorit_lens.training.trainer import Trainer
from neurorit_lens.viz.neuron_page import neuron_page, neuron_pages
from neurorit_lens.viz.report import write_report
from neurorit_lens.viz.views import NeuronView, activation_view, attribution_view, example_view

__all__ = [
    "AblationConfig",
    "AblationResult",
    "DataConfig",
    "EvalConfig",
    "EvalResult",
    "MiningConfig",
    "MiningResult",
    "Neuron",
    "NeuronSet",
    "NeuronView",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "__version__",
    "ablation_hooks",
    "activation_view",
    "attribute",
    "attribution_view",
    "build_instances",
    "evaluate",
    "example_view",
    "export_hf",
    "load_examples",
    "load_model",
    "load_neuron_sets",
    "mean_ablation",
    "mine",
    "neuron_hooks",
    "neuron_page",
    "neuron_pages",
    "render_prompts",
    "run",
    "run_ablation",
    "scale_ablation",
    "split_examples",
    "train",
    "write_report",
    "zero_ablation",
]
