"""The ablation stage's accuracy generation: TransformerLens hooks vs the twin with scaled rows.

The main job's ablation test generates answers to the first ``--accuracy-limit`` dev prompts
under every condition (unablated, each set, each random control). Zero ablation at the post
site bakes exactly into the output weights, so the transformers twin can decode it
(``scaled_neurons_in_twin``) instead of TL with hooks. This times both paths on the same
prompts and neuron sets (the main job's prompt sizes; sets drawn at random with the
per-layer sizes given), alternating the two paths per condition so both see similar machine
load, and counts the answers on which they agree (the twin's logits differ from TL's by
~1e-6, so a near-tie can pick another token).

    python benchmarks/bench_ablation_generation.py --conditions 6

Prints a JSON summary (seconds per path, speed-up, agreement, load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurorit_lens.ablation.controls import ablation_hooks  # noqa: E402
from neurorit_lens.config import DataConfig  # noqa: E402
from neurorit_lens.data.build import build_prompts  # noqa: E402
from neurorit_lens.data.splits import load_splits  # noqa: E402
from neurorit_lens.hooks import neuron_hooks  # noqa: E402
from neurorit_lens.models import load_model  # noqa: E402
from neurorit_lens.models.generation import generate_greedy, scaled_neurons_in_twin  # noqa: E402
from neurorit_lens.neurons.sets import NeuronSet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--conditions", type=int, default=6, help="random neuron sets timed on both paths")
    ap.add_argument("--n-neurons", type=int, default=300, help="neurons per set")
    ap.add_argument("--n-prompts", type=int, default=8, help="the main job's --ablation.accuracy-limit")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--setting", default="noise=0.8")
    args = ap.parse_args()
    load0 = os.getloadavg()
    model = load_model(args.model)
    data = DataConfig(n_passages=3, max_prompt_tokens=256)
    _, splits = load_splits(data)
    ps = build_prompts(splits["dev"][:args.n_prompts], args.setting, model.tokenizer, data, n_ctx=model.cfg.n_ctx,
                       reserve_tokens=args.max_new_tokens)
    g = torch.Generator().manual_seed(0)
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    times = {"tl": 0.0, "twin": 0.0}
    agree = total = changed = 0

    def run(path: str, ns: NeuronSet) -> list[str]:
        t0 = time.perf_counter()
        if path == "tl":
            with torch.no_grad(), neuron_hooks(model, ablation_hooks(ns, "zero")):
                out = generate_greedy(model, ps.prompts, args.max_new_tokens, 8, show_progress=False, backend="tl")
        else:
            with scaled_neurons_in_twin(model, ns.by_layer(), 0.0) as ok:
                assert ok
                out = generate_greedy(model, ps.prompts, args.max_new_tokens, 8, show_progress=False, backend="hf")
        times[path] += time.perf_counter() - t0
        return out

    run("twin", NeuronSet())  # builds the twin once (not timed below)
    times["twin"] = 0.0
    plain = generate_greedy(model, ps.prompts, args.max_new_tokens, 8, show_progress=False, backend="tl")
    for k in range(args.conditions):
        flat = torch.randperm(n_layers * d_mlp, generator=g)[:args.n_neurons]
        layers: dict[int, list[int]] = {}
        for i in flat.tolist():
            layers.setdefault(i // d_mlp, []).append(i % d_mlp)
        ns = NeuronSet({layer: sorted(v) for layer, v in layers.items()})
        order = ("tl", "twin") if k % 2 == 0 else ("twin", "tl")
        outs = {p: run(p, ns) for p in order}
        agree += sum(a == b for a, b in zip(outs["tl"], outs["twin"], strict=True))
        changed += sum(a != b for a, b in zip(outs["tl"], plain, strict=True))
        total += len(ps.prompts)
    print(json.dumps({"conditions": args.conditions, "prompts": len(ps.prompts), "mean_prompt_tokens":
                      round(sum(len(model.to_tokens(p)[0]) for p in ps.prompts) / len(ps.prompts), 1),
                      "seconds": {k: round(v, 1) for k, v in times.items()},
                      "speedup": round(times["tl"] / times["twin"], 2), "answers_equal": f"{agree}/{total}",
                      "answers_changed_by_ablation": f"{changed}/{total}", "torch_threads": torch.get_num_threads(),
                      "load_average": {"before": [round(x, 2) for x in load0],
                                       "after": [round(x, 2) for x in os.getloadavg()]}}, indent=1))


if __name__ == "__main__":
    main()
