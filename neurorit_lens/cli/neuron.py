"""`neurorit neuron`: one self-contained HTML page per neuron, and an index, from a data set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neurorit_lens.cli.common import DEFAULT_MODEL, Common, ModelName, OutDir, load_model
from neurorit_lens.config import SplitChoice

NAME = "neuron"
HELP = "write OUT/L<layer>N<index>.html per neuron (top contexts, histograms, logit effect) and OUT/index.html"


@dataclass
class Args(Common):
    """Put every passage of the data (relevant, irrelevant, counterfactual; at most --limit) in a
    prompt of its own with the question and the gold answer, read the chosen neurons'
    activations in one batched pass, and write one offline page per neuron: its top-activating
    contexts (circuitsvis), activation histograms by passage label and region, its direct logit
    effect, its attribution under R and I (from the mining folder) and the ablation effect of the
    sets holding it (from ablation.json), plus a sortable OUT/index.html.
    """

    model: ModelName = DEFAULT_MODEL
    # Data: embedded, a file path, or hf:<name>[:split].
    data: str = "embedded"
    # Which split of the data the passages come from.
    split: SplitChoice = "all"
    # Neuron labels, comma-separated (L14N512,L3N7).
    neurons: str | None = None
    # All neurons of a mined set, as DIR/neurons.json:NAME (e.g. runs/default/mining/neurons.json:R_excl).
    set: str | None = None
    # Mining folder with scores_{R,I}.safetensors (none = the folder of --set).
    mining: str | None = None
    # ablation.json to show each neuron's set effect (none = ../ablation/ablation.json next to --set's folder).
    ablation: str | None = None
    # At most this many passages, in data order.
    limit: int = 500
    # Top-activating contexts shown per page.
    top: int = 20
    out: OutDir = "runs/neurons"


def parse_set_spec(spec: str, model=None):
    """``DIR/neurons.json:NAME`` -> (the set, the mining folder); errors list the names present."""
    from neurorit_lens.neuron_sets import load_neuron_sets

    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ValueError(f"--set must look like DIR/neurons.json:NAME, got {spec!r}")
    p = Path(path)
    if p.is_dir():
        p = p / "neurons.json"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such neurons file")
    sets = load_neuron_sets(p, model)
    if name not in sets:
        raise ValueError(f"set {name!r} is not in {p}; sets present: {', '.join(sorted(sets))}")
    return sets[name], p.parent


def run(args: Args) -> int:
    from neurorit_lens.config import DataConfig
    from neurorit_lens.data import load_split
    from neurorit_lens.viz.neuron_page import neuron_pages

    if not args.neurons and not args.set:
        raise ValueError("give --neurons L14N512[,...] and/or --set DIR/neurons.json:NAME")
    if args.limit < 1 or args.top < 1:
        raise ValueError("--limit and --top must be >= 1")
    model = load_model(args.model, args.device)
    neurons: list = [s.strip() for s in (args.neurons or "").split(",") if s.strip()]
    mining, ablation = args.mining, args.ablation
    title = "Neuron pages"
    if args.set:
        s, folder = parse_set_spec(args.set, model)
        neurons += [n for n in s if n.label not in neurons]
        title = f"Neuron pages: {args.set.rpartition(':')[2]} ({len(s)} neurons)"
        if mining is None and (folder / "scores_R.safetensors").exists():
            mining = folder
        guess = folder.parent / "ablation" / "ablation.json"
        if ablation is None and guess.exists():
            ablation = guess
    examples = load_split(DataConfig(data=args.data, split=args.split, seed=args.seed))
    index = neuron_pages(model, examples, neurons, args.out, mining=mining, ablation=ablation,
                         limit=args.limit, top=args.top, title=title)
    print(f"neuron pages: {index}")
    return 0
