"""How much of a neuron's attribution comes from the first prompt position (the attention sink)?

The first token of every SmolLM2 chat prompt is the same ``<|im_start|>``; its activations carry
nothing about the context but are the model's huge attention-sink activations. This script
scores the same gold-only prompts with ``positions="all"`` and ``positions="skip_first"``
(``grad_x_act`` by default), and reports the share of each layer's |score| that the first
position contributes, and the threshold-selected sets under both rules.

    python -m benchmarks.sink_position --n 16 --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cells(ns) -> set[tuple[int, int]]:
    return {(int(layer), int(i)) for layer, idx in ns.to_dict().items() for i in idx}


def run(args) -> dict:
    import torch

    from neurorit_lens.config import DataConfig
    from neurorit_lens.data.build import build_prompts
    from neurorit_lens.data.splits import load_splits
    from neurorit_lens.models.registry import load_model
    from neurorit_lens.neurons.attribution import attribute
    from neurorit_lens.neurons.selection import select
    from neurorit_lens.objective import tokenize_with_answers

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    cfg = DataConfig(data=args.data, n_passages=1, max_prompt_tokens=args.max_prompt_tokens, seed=0)
    _, splits = load_splits(cfg)
    ps = build_prompts(splits["train"][: args.n], "gold", model.tokenizer, cfg, n_ctx=model.cfg.n_ctx)
    scores = {pos: torch.cat([attribute(model, tokenize_with_answers(model, [p], [c]), args.method,
                                        steps=args.steps, positions=pos)
                              for p, c in zip(ps.prompts, ps.continuations, strict=True)])
              for pos in ("all", "skip_first")}
    first = (scores["all"] - scores["skip_first"]).abs().sum(-1)
    share = (first / scores["all"].abs().sum(-1).clamp(min=1e-12)).mean(0)
    sets = {}
    for t in args.thresholds:
        a, b = (_cells(select(scores[p], rule="threshold", threshold=t)) for p in ("all", "skip_first"))
        sets[str(t)] = {"all": len(a), "skip_first": len(b), "jaccard": len(a & b) / max(1, len(a | b))}
    return {"model": args.model, "data": args.data, "method": args.method, "n": len(ps.prompts),
            "prompt_tokens": [int(t) for t in ps.n_tokens],
            "first_position_share_per_layer": [round(float(x), 4) for x in share], "sets": sets,
            "command": "python -m benchmarks.sink_position " + " ".join(sys.argv[1:])}


def render(r: dict) -> str:
    share = r["first_position_share_per_layer"]
    lines = [f"# First-position (attention sink) share of `{r['method']}` scores: {r['model']}, {r['n']} gold-only "
             f"prompts ({min(r['prompt_tokens'])}-{max(r['prompt_tokens'])} tokens)", "",
             "Share of each layer's |score| contributed by position 0 (mean over prompts):", "",
             "| layer | " + " | ".join(str(i) for i in range(len(share))) + " |",
             "|---|" + "---|" * len(share),
             "| share | " + " | ".join(f"{x:.2f}" for x in share) + " |", "",
             "| threshold | set size, all | set size, skip_first | Jaccard |", "|---|---|---|---|"]
    lines += [f"| {t} | {v['all']} | {v['skip_first']} | {v['jaccard']:.2f} |" for t, v in r["sets"].items()]
    lines += ["", f"Reproduce: `{r['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", default="embedded:500")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--method", default="grad_x_act", choices=["grad_x_act", "ig"])
    p.add_argument("--steps", type=int, default=8, help="IG steps (method ig only)")
    p.add_argument("--max-prompt-tokens", type=int, default=192)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sink_position"))
    args = p.parse_args(argv)
    r = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sink_position_{args.method}.json").write_text(json.dumps(r, indent=1))
    (out / f"sink_position_{args.method}.md").write_text(render(r))
    print(render(r))


if __name__ == "__main__":
    main()
