"""One-GPU check: mining and a short training run on SmolLM2 in bf16; timings and peak memory.

Run by ``benchmarks/gpu_check.sh`` (which sets the environment and a time limit). Every
phase prints one line ``PHASE <name> seconds=<s> peak_gb=<torch.cuda.max_memory_allocated>``
and the whole result goes to ``$OUT/gpu_check.json`` (or ``--out``).
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
    args = ap.parse_args()

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
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
