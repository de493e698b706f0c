"""Benchmark: our per-layer IG vs Captum's IntegratedGradients vs the knowledge-neurons package.

Same weights, same prompts, same number of steps (20), all on this machine in one run:

* A random-init GPT-2-architecture model is saved as a Hugging Face checkpoint dir (with
  the offline tiny tokenizer); TransformerLens loads it for ours and Captum, Hugging Face
  loads it for knowledge-neurons.
* Setting "all positions" (our default: F = answer log-prob, every position scaled,
  post-activation, midpoint rule): ours ``ig`` vs Captum ``IntegratedGradients`` on the
  function "run the model with this layer's activation replaced by the input", looped
  over layers (exactly as in ``tests/unit/test_attribution.py``), plus the cost of
  ``ig_joint`` and ``grad_x_act``.
* Setting "knowledge-neurons" (what that package computes for GPT-2: probability of a
  one-token answer at the last prompt position, pre-activation ``mlp.c_fc`` output scaled
  at that position only, 20 points ``linspace(0, 1, 20)``, weight 1/20): ours ``ig`` with
  ``positions="last", target="prob", site="pre"`` and those alphas vs ``KnowledgeNeurons.get_scores``.

Times are CPU seconds (user + system) of the worker process with one torch thread, which
other jobs on a shared machine disturb far less than wall time; wall time is kept too.
Each method runs in its own subprocess (peak RSS = ``ru_maxrss`` of that process, also
given as the increase over the RSS after loading the model), one warm-up prompt first,
one torch thread each (the machine's 2 cores are shared). Scores are compared where the
computations are the same.

Run: ``python -m benchmarks.bench_attribution`` (about 5-10 minutes on 2 shared cores);
writes ``benchmarks/results/attribution.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = [
    "Question: Who wrote the report? Passages: Document 1 says the river Quell flows north. The capital of "
    "Zarnia is Velmor. Irrelevant text about weather and trains. Answer:",
    "What is the name of the tallest tower in Brindle? The Sorrel Spire is 300 metres tall. Trains in Brindle "
    "run on time every day. The capital of Zarnia is Velmor. Answer:",
    "Passages: Irrelevant text about weather and trains. Document 1 says the river Quell flows north. "
    "Question: Which way does the river Quell flow? Answer:",
    "The capital of Zarnia is Velmor. Alice wrote the report about the Sorrel Spire in Brindle. Question: "
    "What is the capital of Zarnia? Answer:",
]
CANDIDATE_ANSWERS = [" the", " of", " passage", " wrote", " 300", " is"]


def cpu_s() -> float:
    """User + system CPU time of this process (robust to other jobs on a shared machine)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- workers (one per subprocess) ---------------------------------------------------------


def _ours_model(ckpt: str):
    from neurorit_lens.models import load_model

    return load_model(ckpt)


def worker(name: str, ckpt: str, spec: dict, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    prompts, answers, steps, chunk = spec["prompts"], spec["answers"], spec["steps"], spec["alpha_chunk"]
    t_load = time.perf_counter()
    if name == "kn":
        from knowledge_neurons import KnowledgeNeurons
        from transformers import AutoTokenizer, GPT2LMHeadModel

        hf = GPT2LMHeadModel.from_pretrained(ckpt, local_files_only=True).eval()
        tok = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
        kn = KnowledgeNeurons(hf, tok, model_type="gpt2", device="cpu")

        def run_one(p, a, s):
            return kn.get_scores(p, a, batch_size=chunk, steps=s, pbar=False).detach()
    else:
        from neurorit_lens.hooks import mlp_hook_name
        from neurorit_lens.neurons.attribution import attribute
        from neurorit_lens.objective import answer_target, tokenize_with_answers

        model = _ours_model(ckpt)

        layers = spec.get("layers") or list(range(model.cfg.n_layers))

        def batch_of(p, a):
            if spec.get("real_model"):
                return tokenize_with_answers(model, [p], [a])
            return tokenize_with_answers(model, [p], [a], prepend_bos=False)

        if name == "captum":
            from captum.attr import IntegratedGradients

            if spec.get("real_model"):
                for prm in model.parameters():  # the strongest Captum baseline: no weight gradients
                    prm.requires_grad_(False)

            def run_one(p, a, s):
                b = batch_of(p, a)
                out_rows = []
                for layer in layers:
                    hname = mlp_hook_name(layer)
                    _, cache = model.run_with_cache(b.tokens, names_filter=hname)
                    act = cache[hname]

                    def forward(x, b=b, hname=hname):
                        rep = b.select([0] * x.shape[0])
                        logits = model.run_with_hooks(rep.tokens, fwd_hooks=[(hname, lambda t, hook: x)])
                        return answer_target(logits, rep, "logprob")

                    attr = IntegratedGradients(forward).attribute(act, baselines=torch.zeros_like(act), n_steps=s,
                                                                  method="riemann_middle", internal_batch_size=chunk)
                    out_rows.append(attr[0].sum(0).detach())
                return torch.stack(out_rows)
        elif name == "ours_kn":
            def run_one(p, a, s):
                alphas = torch.linspace(0, 1, s).tolist()
                return attribute(model, batch_of(p, a), "ig", alphas=alphas, alpha_chunk=chunk, positions="last",
                                 target="prob", site="pre")[0]
        else:
            method = {"ours_ig": "ig", "ours_ig_joint": "ig_joint", "ours_grad_x_act": "grad_x_act"}[name]

            def run_one(p, a, s):
                out = attribute(model, batch_of(p, a), method, steps=s, alpha_chunk=chunk,
                                layers=spec.get("layers"))[0]
                return out[layers] if spec.get("real_model") else out
    load_s = time.perf_counter() - t_load
    rss_loaded = rss_mb()
    run_one(prompts[0], answers[0], 2 if name != "kn" else chunk)  # warm-up
    t0, c0 = time.perf_counter(), cpu_s()
    scores = [run_one(p, a, steps) for p, a in zip(prompts, answers, strict=True)]
    seconds, cpu_seconds = time.perf_counter() - t0, cpu_s() - c0
    torch.save(torch.stack([s.float() for s in scores]), out + ".pt")
    res = {"name": name, "seconds": cpu_seconds, "wall_seconds": seconds, "cpu_seconds": cpu_seconds,
           "per_prompt_s": cpu_seconds / len(prompts), "load_s": load_s,
           "peak_rss_mb": rss_mb(), "rss_after_load_mb": rss_loaded, "peak_rss_increase_mb": rss_mb() - rss_loaded,
           "torch_threads": torch.get_num_threads(), "loadavg_after": list(os.getloadavg())}
    Path(out + ".json").write_text(json.dumps(res))


# --- orchestration ------------------------------------------------------------------------------


def build_checkpoint(d: Path, n_layer: int, d_model: int, n_head: int, vocab: int) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from neurorit_lens.models import tiny_tokenizer

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=n_layer, n_embd=d_model, n_head=n_head, vocab_size=vocab, n_positions=256,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    model.save_pretrained(d, safe_serialization=True)
    tiny_tokenizer().save_pretrained(d)


def single_token_answers(ckpt: Path) -> list[str]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
    ok = [a for a in CANDIDATE_ANSWERS if len(tok.encode(a, add_special_tokens=False)) == 1]
    if len(ok) < len(PROMPTS):
        raise RuntimeError(f"need {len(PROMPTS)} one-token answers, found {ok}")
    return ok[: len(PROMPTS)]


def _ratio(results: dict, a: str, b: str, key: str = "seconds") -> float | None:
    """results[b][key] / results[a][key] (how many times faster a is), or None if either failed."""
    if key in results.get(a, {}) and key in results.get(b, {}):
        return results[b][key] / results[a][key]
    return None


def _fmt(x, fmt="{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker")
    ap.add_argument("--ckpt")
    ap.add_argument("--spec")
    ap.add_argument("--wout")
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--alpha-chunk", type=int, default=5)
    ap.add_argument("--kn-path", default=os.environ.get("KN_PATH", "/tmp/kn_pkg"),
                    help="where knowledge-neurons==0.0.2 is installed (pip install --no-deps --target DIR)")
    ap.add_argument("--methods", default="ours_ig,captum,ours_kn,kn,ours_ig_joint,ours_grad_x_act")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--model", default=None,
                    help="a real model for load_model (e.g. smollm2-135m-instruct) instead of the random GPT-2: "
                         "RAG prompts from --data, per-layer IG on --layers, ours vs Captum (and grad_x_act)")
    ap.add_argument("--layers", default="0,10,20,29", help="layers attributed with --model")
    ap.add_argument("--data", default="embedded:500", help="QA data for --model prompts (gold-only)")
    ap.add_argument("--n-prompts", type=int, default=4)
    ap.add_argument("--max-prompt-tokens", type=int, default=192)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.ckpt, json.loads(args.spec), args.wout)
        return 0

    from neurorit_lens.io import environment_info

    tmp = Path(tempfile.mkdtemp(prefix="bench_attr_"))
    if args.model:
        return run_real(args, argv, tmp)
    ckpt = tmp / "gpt2-random"
    build_checkpoint(ckpt, args.n_layer, args.d_model, args.n_head, args.vocab)
    spec = {"prompts": PROMPTS, "answers": single_token_answers(ckpt), "steps": args.steps,
            "alpha_chunk": args.alpha_chunk, "kn_path": args.kn_path}
    env = environment_info(0, {"loadavg_start": list(os.getloadavg())})
    results, scores = run_workers(args.methods.split(","), str(ckpt), spec, tmp)
    return _finish_synthetic(args, argv, ckpt, spec, env, results, scores)


def run_workers(names: list[str], ckpt: str, spec: dict, tmp: Path) -> tuple[dict, dict]:
    """Each method in its own subprocess, one after the other; returns timings and scores."""
    import torch

    results, scores = {}, {}
    for name in names:
        wout = str(tmp / name)
        cmd = [sys.executable, "-m", "benchmarks.bench_attribution", "--worker", name, "--ckpt", ckpt, "--spec",
               json.dumps(spec), "--wout", wout]
        print(f"running {name} ...", flush=True)
        path = os.pathsep.join([str(ROOT), *([spec["kn_path"]] if name == "kn" else [])])  # the reference's checkout
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={
            **os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": path})
        if p.returncode != 0:
            results[name] = {"name": name, "error": p.stderr[-3000:]}
            print(f"  {name} FAILED:\n{p.stderr[-3000:]}", flush=True)
            continue
        results[name] = json.loads(Path(wout + ".json").read_text())
        scores[name] = torch.load(wout + ".pt")
        print(f"  {name}: {results[name]['seconds']:.2f} CPU s, {results[name]['wall_seconds']:.2f} wall s, "
              f"peak RSS {results[name]['peak_rss_mb']:.0f} MB", flush=True)
    return results, scores


def _finish_synthetic(args, argv, ckpt: Path, spec: dict, env: dict, results: dict, scores: dict) -> int:
    from neurorit_lens.io import atomic_write_json, atomic_write_text

    checks = {}
    if "ours_ig" in scores and "captum" in scores:
        checks["ours_ig_vs_captum_rel_err"] = rel_err(scores["ours_ig"], scores["captum"])
    if "ours_kn" in scores and "kn" in scores:
        checks["ours_kn_vs_knowledge_neurons_rel_err"] = rel_err(scores["ours_kn"], scores["kn"])
    summary = {
        "model": {"arch": "GPT-2 (random init, HF checkpoint)", "n_layer": args.n_layer, "d_model": args.d_model,
                  "d_mlp": 4 * args.d_model, "vocab": args.vocab},
        "prompts": len(PROMPTS), "prompt_tokens": None, "steps": args.steps, "alpha_chunk": args.alpha_chunk,
        "speedup_vs_captum": _ratio(results, "ours_ig", "captum"),
        "speedup_vs_knowledge_neurons": _ratio(results, "ours_kn", "kn"),
        "ig_joint_vs_ig_time": (results.get("ours_ig_joint", {}).get("seconds", 0) / results["ours_ig"]["seconds"]
                                if "seconds" in results.get("ours_ig", {}) else None),
        "grad_x_act_vs_ig_time": (results.get("ours_grad_x_act", {}).get("seconds", 0) / results["ours_ig"]["seconds"]
                                  if "seconds" in results.get("ours_ig", {}) else None),
        "score_checks": checks,
        "results": results,
        "environment": {**env, "loadavg_end": list(os.getloadavg())},
        "command": "python -m benchmarks.bench_attribution " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
    summary["prompt_tokens"] = [len(tok.encode(p)) for p in PROMPTS]
    out = Path(args.out)
    atomic_write_json(out / "attribution.json", summary)
    atomic_write_text(out / "attribution.md", render_md(summary))
    print(render_md(summary))
    return 0


def run_real(args, argv, tmp: Path) -> int:
    """Ours vs Captum on a real model: per-layer IG over ``--layers``, wall and CPU time, one thread each."""
    import torch

    from neurorit_lens.config import DataConfig
    from neurorit_lens.data.build import build_prompts
    from neurorit_lens.data.splits import load_splits
    from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info
    from neurorit_lens.models.registry import load_model

    model = load_model(args.model)
    layers = [int(x) for x in args.layers.split(",")]
    data_cfg = DataConfig(data=args.data, n_passages=1, max_prompt_tokens=args.max_prompt_tokens, seed=0)
    _, splits = load_splits(data_cfg)
    ps = build_prompts(splits["train"][: args.n_prompts], "gold", model.tokenizer, data_cfg, n_ctx=model.cfg.n_ctx)
    if not ps.prompts:
        raise SystemExit(f"no prompt fits {args.max_prompt_tokens} tokens ({ps.skipped_reasons})")
    cfg = model.cfg
    arch = {"arch": args.model, "n_layer": cfg.n_layers, "d_model": cfg.d_model, "d_mlp": cfg.d_mlp,
            "vocab": cfg.d_vocab}
    del model
    spec = {"prompts": list(ps.prompts), "answers": list(ps.continuations), "steps": args.steps,
            "alpha_chunk": args.alpha_chunk, "layers": layers, "real_model": True}
    names = [n for n in args.methods.split(",") if n in ("ours_ig", "captum", "ours_grad_x_act")]
    env = environment_info(0, {"loadavg_start": list(os.getloadavg())})
    results, scores = run_workers(names, args.model, spec, tmp)

    summary = {
        "model": arch, "layers": layers, "prompts": len(ps.prompts), "prompt_tokens": [int(t) for t in ps.n_tokens],
        "answers": list(ps.continuations), "steps": args.steps, "alpha_chunk": args.alpha_chunk,
        "speedup_vs_captum_wall": _ratio(results, "ours_ig", "captum", "wall_seconds"),
        "speedup_vs_captum_cpu": _ratio(results, "ours_ig", "captum", "cpu_seconds"),
        "grad_x_act_vs_ig_wall": _ratio(results, "ours_ig", "ours_grad_x_act", "wall_seconds"),
        "score_checks": ({"ours_ig_vs_captum_rel_err": rel_err(scores["ours_ig"], scores["captum"])}
                         if "ours_ig" in scores and "captum" in scores else {}),
        "results": results,
        "environment": {**env, "loadavg_end": list(os.getloadavg()), "torch": torch.__version__},
        "command": "python -m benchmarks.bench_attribution " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    stem = "attribution_" + args.model.split("/")[-1].lower()
    atomic_write_json(out / f"{stem}.json", summary)
    atomic_write_text(out / f"{stem}.md", render_real_md(summary))
    print(render_real_md(summary))
    return 0


def render_real_md(s: dict) -> str:
    m, env = s["model"], s["environment"]
    lines = [
        f"# Attribution benchmark on {m['arch']}",
        "",
        f"{m['n_layer']} layers, d_model {m['d_model']}, d_mlp {m['d_mlp']}. Per-layer IG (F = log p(gold answer), "
        f"every position, post-activation, midpoint rule, {s['steps']} steps, alphas in chunks of "
        f"{s['alpha_chunk']}; Captum's `internal_batch_size` = the same chunk) on layers {s['layers']}, "
        f"{s['prompts']} gold-only RAG prompts of {s['prompt_tokens']} tokens with multi-token answers. "
        "Each method runs in its own subprocess with one torch thread, one after the other; Captum runs the "
        "TransformerLens model with its weights frozen (no weight gradients, its strongest setting) and "
        "replaces the layer's activation through a hook, as in `tests/unit/test_attribution.py`. "
        f"Load average {env['loadavg_start']} (start) / {env['loadavg_end']} (end), {env['cpu_count']} CPUs.",
        "",
        "| method | wall (s) | CPU (s) | wall per prompt (s) | peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for name, r in s["results"].items():
        if "error" in r:
            lines.append(f"| {name} | failed | | | |")
        else:
            lines.append(f"| {name} | {r['wall_seconds']:.2f} | {r['cpu_seconds']:.2f} | "
                         f"{r['wall_seconds'] / s['prompts']:.2f} | {r['peak_rss_mb']:.0f} |")
    lines += [
        "",
        f"- ours `ig` vs Captum IntegratedGradients: **{_fmt(s['speedup_vs_captum_wall'])}x** faster in wall time, "
        f"{_fmt(s['speedup_vs_captum_cpu'])}x in CPU time (relative error of scores "
        f"{_fmt(s['score_checks'].get('ours_ig_vs_captum_rel_err'), '{:.2e}')})",
        f"- `grad_x_act` costs {_fmt(s['grad_x_act_vs_ig_wall'], '{:.3f}')}x the wall time of per-layer `ig`.",
        "",
        f"Reproduce: `{s['command']}`",
        "",
    ]
    return "\n".join(lines)


def render_md(s: dict) -> str:
    m = s["model"]
    lines = [
        "# Attribution benchmark",
        "",
        f"Model: {m['arch']}, {m['n_layer']} layers, d_model {m['d_model']}, d_mlp {m['d_mlp']}, vocab {m['vocab']}; "
        f"{s['prompts']} prompts of {s['prompt_tokens']} tokens, one-token answers; {s['steps']} steps, "
        f"alphas in chunks of {s['alpha_chunk']}; one torch thread per subprocess; "
        f"load average {s['environment']['loadavg_start']} (start) / {s['environment']['loadavg_end']} (end), "
        f"{s['environment']['cpu_count']} CPUs.",
        "",
        "| method | setting | CPU time (s) | wall (s) | per prompt (CPU s) | peak RSS (MB) | RSS increase (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    setting = {"ours_ig": "all positions, log-prob, post, midpoint",
               "captum": "all positions, log-prob, post, midpoint",
               "ours_kn": "knowledge-neurons (last pos, prob, pre, linspace)",
               "kn": "knowledge-neurons (last pos, prob, pre, linspace)",
               "ours_ig_joint": "all positions, log-prob, post, midpoint",
               "ours_grad_x_act": "all positions, log-prob, post"}
    for name, r in s["results"].items():
        if "error" in r:
            lines.append(f"| {name} | {setting.get(name, '')} | failed | | | | |")
        else:
            lines.append(f"| {name} | {setting.get(name, '')} | {r['seconds']:.2f} | {r['wall_seconds']:.2f} | "
                         f"{r['per_prompt_s']:.3f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['peak_rss_increase_mb']:.0f} |")
    lines += [
        "",
        f"- ours `ig` vs Captum IntegratedGradients: **{_fmt(s['speedup_vs_captum'])}x** faster "
        f"(relative error of scores {_fmt(s['score_checks'].get('ours_ig_vs_captum_rel_err'), '{:.2e}')})",
        f"- ours `ig` vs knowledge-neurons 0.0.2: **{_fmt(s['speedup_vs_knowledge_neurons'])}x** faster "
        f"(relative error of scores {_fmt(s['score_checks'].get('ours_kn_vs_knowledge_neurons_rel_err'), '{:.2e}')})",
        f"- `ig_joint` costs {_fmt(s['ig_joint_vs_ig_time'], '{:.3f}')}x and `grad_x_act` "
        f"{_fmt(s['grad_x_act_vs_ig_time'], '{:.3f}')}x the time of per-layer `ig`.",
        "",
        f"Reproduce: `{s['command']}`",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
