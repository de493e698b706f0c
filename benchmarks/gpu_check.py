"""One-GPU check: mining, IG against Captum, short trainings; timings and peak memory.

Run by ``benchmarks/gpu_check.sh`` (which sets the environment and a time limit). Phases:
load in bf16; mining (``grad_x_act``, per-layer ``ig`` on 2 layers, ``ig_joint``); per-layer
IG of one prompt on the last layer against Captum's ``IntegratedGradients`` (fp32 weights,
relative error); ``neurorit`` training in bf16 weights; then ``neurorit`` with fp32 master
weights under bf16 autocast (``TrainConfig.precision``) with and without activation
checkpointing (losses must agree; peak memory compared). Every phase prints one line
``PHASE <name> seconds=<s> peak_gb=<torch.cuda.max_memory_allocated>``; the whole result goes
to ``$OUT/gpu_check.json`` (or ``--out``) and the last line printed is one JSON summary.

``--device cpu --model tiny`` dry-runs every phase on a random tiny model (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n-examples", type=int, default=4)
    ap.add_argument("--ig-steps", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_check"))
    ap.add_argument("--device", default="cuda", help="'cpu' (with --model tiny) dry-runs the script without a GPU")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--dry", action="store_true", help="= --device cpu --model tiny --train-steps 2")
    args = ap.parse_args()
    if args.dry:
        args.device, args.model, args.train_steps, args.n_examples = "cpu", "tiny", 2, 2

    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    from neurorit_lens.config import DataConfig, MiningConfig, TrainConfig
    from neurorit_lens.data import embedded_examples
    from neurorit_lens.models import load_model
    from neurorit_lens.neurons.mining import mine
    from neurorit_lens.training.methods import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                 "cuda": torch.version.cuda, "model": args.model, "phases": {}}

    def phase(name: str, fn):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        value = fn()
        if cuda:
            torch.cuda.synchronize()
        rec = {"seconds": round(time.perf_counter() - t0, 3),
               "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 3) if cuda else None}
        res["phases"][name] = rec
        print(f"PHASE {name} seconds={rec['seconds']} peak_gb={rec['peak_gb']}", flush=True)
        return value

    model = phase(f"load_{args.dtype}", lambda: load_model(args.model, device=args.device, dtype=args.dtype))
    res["params"] = sum(p.numel() for p in model.parameters())
    res["weights_gb"] = round(sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9, 3)
    examples = embedded_examples()[: args.n_examples]
    data_cfg = DataConfig(max_prompt_tokens=512)
    for method, steps, layers in (("grad_x_act", 1, None), ("ig", args.ig_steps, (0, model.cfg.n_layers // 2)),
                                  ("ig_joint", args.ig_steps, None)):
        cfg = MiningConfig(method=method, steps=steps, alpha_chunk=min(steps, 4), layers=layers)
        r = phase(f"mine_{method}", lambda cfg=cfg: mine(model, examples, cfg, data_cfg, out_dir=None,
                                                            show_progress=False, model_name=args.model))
        n = len(r.ids_R) + len(r.ids_I)
        record = res["phases"][f"mine_{method}"]
        record.update({"prompts": n, "s_per_prompt": round(record["seconds"] / max(n, 1), 3),
                       "layers": list(layers) if layers else "all",
                       "totals": {k: len(v) for k, v in r.sets.items()}})
        assert all(torch.isfinite(t).all() for t in (r.scores_R, r.scores_I)), f"{method}: non-finite scores"
    sets = r.sets
    mass = r.layer_mass()
    tcfg = TrainConfig(method="neurorit", steps=args.train_steps, batch_size=4, warmup_steps=2, lr=1e-4,
                       eval_every=args.train_steps, checkpoint_every=args.train_steps)
    tr = phase("train_neurorit_bf16", lambda: train(model, embedded_examples()[:24], embedded_examples()[24:32], sets,
                                                    mass, tcfg, data_cfg, out / "train", save_model=False,
                                                    progress=False))
    losses = [o.loss for o in tr.log]
    res["phases"]["train_neurorit_bf16"].update({"steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1],
                                                 "trainable_fraction": tr.trainable_fraction})
    assert all(map(lambda x: x == x, losses)), "NaN training loss"
    del model
    if cuda:
        torch.cuda.empty_cache()
    model32 = phase("load_fp32", lambda: load_model(args.model, device=args.device, dtype="float32"))
    phase("ig_vs_captum", lambda: res["phases"].update(captum_check=captum_check(model32, examples[0], data_cfg)))
    res["phases"]["ig_vs_captum"].update(res["phases"].pop("captum_check"))
    print(f"IG vs Captum: relative error {res['phases']['ig_vs_captum']['rel_error']:.2e}", flush=True)
    snapshot = {k: v.clone() for k, v in model32.state_dict().items()}
    for ckpt in (False, True):
        name = f"train_neurorit_autocast_bf16_ckpt{int(ckpt)}"
        cfg = TrainConfig(method="neurorit", steps=args.train_steps, batch_size=4, warmup_steps=2, lr=1e-4,
                          eval_every=args.train_steps, checkpoint_every=0, precision="bf16",
                          activation_checkpointing=ckpt)
        t = phase(name, lambda cfg=cfg: train(model32, embedded_examples()[:24], embedded_examples()[24:32], sets,
                                              mass, cfg, DataConfig(max_prompt_tokens=896), None,
                                              save_model=False, progress=False))
        model32.load_state_dict(snapshot)
        res["phases"][name].update({"losses": [o.loss for o in t.log]})
    a, b = (res["phases"][f"train_neurorit_autocast_bf16_ckpt{i}"] for i in (0, 1))
    res["checkpointing"] = {"same_losses": all(abs(x - y) <= 1e-3 * max(1.0, abs(x))
                                               for x, y in zip(a["losses"], b["losses"], strict=True)),
                            "peak_ratio": (a["peak_gb"] / b["peak_gb"]) if cuda and b["peak_gb"] else None,
                            "time_ratio": b["seconds"] / a["seconds"]}
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2))
    summary = {"device": res["device"], "ok": res["checkpointing"]["same_losses"]
               and res["phases"]["ig_vs_captum"]["rel_error"] < 1e-2,
               "ig_vs_captum_rel_error": res["phases"]["ig_vs_captum"]["rel_error"],
               "checkpointing": res["checkpointing"],
               "peak_gb": {k: v["peak_gb"] for k, v in res["phases"].items()},
               "seconds": {k: v["seconds"] for k, v in res["phases"].items()}}
    print(json.dumps(summary))
    return 0


def captum_check(model, example, data_cfg) -> dict:
    """Per-layer IG of the last layer for one gold-context prompt: ours against Captum's IntegratedGradients
    (8 midpoint steps, fp32 weights; relative error of the position-summed scores)."""
    import torch
    from captum.attr import IntegratedGradients

    from neurorit_lens.data import answer_continuation, build_instances, render_prompts
    from neurorit_lens.hooks import mlp_hook_name
    from neurorit_lens.neurons.attribution import attribute
    from neurorit_lens.objective import answer_target, tokenize_with_answers

    built = build_instances([example], "gold", 3, 0)
    rp = render_prompts(built.instances, model.tokenizer, data_cfg.template, 256)
    b = tokenize_with_answers(model, rp.prompts, [answer_continuation(i.example.answer, rp.template)
                                                  for i in rp.instances])
    layer, steps = model.cfg.n_layers - 1, 8
    ours = attribute(model, b, "ig", steps=steps, layers=[layer], alpha_chunk=4)[0, layer].float().cpu()
    _, cache = model.run_with_cache(b.tokens, names_filter=mlp_hook_name(layer))
    a = cache[mlp_hook_name(layer)]

    def forward(x):
        logits = model.run_with_hooks(b.tokens.expand(x.shape[0], -1),
                                      fwd_hooks=[(mlp_hook_name(layer), lambda act, hook: x)])
        return answer_target(logits, b.select([0] * x.shape[0]), "logprob")

    ref = IntegratedGradients(forward).attribute(a, baselines=torch.zeros_like(a), n_steps=steps,
                                                 method="riemann_middle", internal_batch_size=4)
    ref = ref[0].sum(0).float().cpu()
    return {"rel_error": float((ours - ref).norm() / ref.norm()), "layer": layer, "steps": steps,
            "n_tokens": int(b.lengths[0])}


if __name__ == "__main__":
    sys.exit(main())
