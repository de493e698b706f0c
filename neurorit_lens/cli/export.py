"""`neurorit export`: a trained model folder as a transformers checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from neurorit_lens.cli.common import OutDir
from neurorit_lens.config import ExportFormat, GgufDtype

NAME = "export"
HELP = "export a trained model folder as a transformers checkpoint (Llama-style or GPT-2) or a GGUF file (Llama)"


@dataclass
class Args:
    """Read the model/ folder written by `neurorit train` and write a transformers checkpoint
    (model.safetensors, config.json, generation_config.json, tokenizer files) that
    AutoModelForCausalLM.from_pretrained(OUT) loads offline with the same log-probs. Trained
    b_in entries of Llama-style models fold exactly into the down-projection bias; anything the
    target architecture cannot hold is an error naming the parameter.
    """

    # Trained model folder (RUN/train/<method>/model, written by `neurorit train`).
    model: str
    out: OutDir
    # Replace a non-empty output folder (or an existing GGUF file).
    force: bool = False
    # hf: a transformers checkpoint folder; gguf: one .gguf file (llama.cpp's llama architecture,
    # Llama-style models only) written to OUT.
    format: ExportFormat = "hf"
    # Matrix dtype of a GGUF export (float32 is exact; norms and biases stay float32).
    gguf_dtype: GgufDtype = "float32"


def run(args: Args) -> int:
    if args.format == "gguf":
        from neurorit_lens.models.export_gguf import export_gguf

        out = export_gguf(args.model, args.out, force=args.force, dtype=args.gguf_dtype)
        print(f"wrote {out}")
        return 0
    from neurorit_lens.models.export import export_hf

    out = export_hf(args.model, args.out, force=args.force)
    print(f"wrote {out}")
    return 0
