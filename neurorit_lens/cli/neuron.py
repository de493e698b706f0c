"""`neurorit neuron`: one self-contained HTML page per neuron, and an index, from a data set."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "neuron"
HELP = "write OUT/L<layer>N<index>.html per neuron (top contexts, histograms, logit effect) and OUT/index.html"
DESCRIPTION = (
    "Put every passage of the data (relevant, irrelevant, counterfactual; at most --limit) in a "
    "prompt of its own with the question and the gold answer, read the chosen neurons' "
    "activations in one batched pass, and write one offline page per neuron: its top-activating "
    "contexts (circuitsvis), activation histograms by passage label and region, its direct logit "
    "effect, its attribution under R and I (from the mining folder) and the ablation effect of the "
    "sets holding it (from ablation.json), plus a sortable OUT/index.html."
)

log = logging.getLogger("neurorit_lens")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name or local checkpoint dir")
    p.add_argument("--data", default="embedded", help="data: embedded, a file path, or hf:<name>[:split]")
    p.add_argument("--split", default="all", help="which split of the data: train | dev | test | all")
    p.add_argument("--neurons", default=None, metavar="L14N512[,L3N7...]", help="neuron labels, comma-separated")
    p.add_argument("--set", default=None, metavar="DIR/neurons.json:NAME",
                   help="all neurons of a mined set (e.g. runs/default/mining/neurons.json:R_excl)")
    p.add_argument("--mining", default=None, metavar="DIR",
                   help="mining folder with scores_{R,I}.safetensors (default: the folder of --set)")
    p.add_argument("--ablation", default=None, metavar="FILE",
                   help="ablation.json (default: ../ablation/ablation.json next to --set's folder, if there)")
    p.add_argument("--limit", type=int, default=500, help="at most this many passages, in data order")
    p.add_argument("--top", type=int, default=20, help="top-activating contexts per page")
    p.add_argument("--out", default="runs/neurons", help="output folder")
    p.add_argument("--device", default="cpu", help="torch device")


def parse_set_spec(spec: str, model=None):
    """``DIR/neurons.json:NAME`` -> (the set, the mining folder); errors list the names present."""
    from neurorit_lens.neurons.sets import load_neuron_sets

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


def run(args: argparse.Namespace) -> int:
    from neurorit_lens.config import DataConfig
    from neurorit_lens.data import load_split
    from neurorit_lens.models import load_model
    from neurorit_lens.viz.neuron_page import neuron_pages

    if not args.neurons and not args.set:
        raise ValueError("give --neurons L14N512[,...] and/or --set DIR/neurons.json:NAME")
    if args.limit < 1 or args.top < 1:
        raise ValueError("--limit and --top must be >= 1")
    model = load_model(args.model, device=args.device)
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
    examples = load_split(DataConfig(data=args.data, split=args.split))
    index = neuron_pages(model, examples, neurons, args.out, mining=mining, ablation=ablation,
                         limit=args.limit, top=args.top, title=title)
    print(f"neuron pages: {index}")
    return 0
