"""`neurorit export`: a trained model folder as a transformers checkpoint."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a trained model folder as a transformers checkpoint (Llama-style or GPT-2)"
DESCRIPTION = (
    "Read the model/ folder written by `neurorit train` and write a transformers checkpoint "
    "(model.safetensors, config.json, generation_config.json, tokenizer files) that "
    "AutoModelForCausalLM.from_pretrained(OUT) loads offline with the same log-probs. "
    "Trained b_in entries of Llama-style models fold exactly into the down-projection bias; "
    "anything the target architecture cannot hold is an error naming it."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="trained model folder (RUN/model, written by `neurorit train`)")
    p.add_argument("--out", required=True, help="output folder for the checkpoint (must be empty unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--format", choices=("hf", "gguf"), default="hf",
                   help="checkpoint format (default: hf; gguf is not implemented yet)")


def run(args: argparse.Namespace) -> int:
    from neurorit_lens.models.export import export_hf

    if args.format == "gguf":
        raise ValueError("GGUF export is not implemented; export with --format hf and convert that folder "
                         "with llama.cpp's convert_hf_to_gguf.py")
    out = export_hf(args.model, args.out, force=args.force)
    print(f"wrote {out}")
    return 0
