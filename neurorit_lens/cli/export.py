"""`neurorit export`: a trained model folder as a transformers checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from neurorit_lens.cli.common import OutDir

NAME = "export"
HELP = "export a trained model folder as a transformers checkpoint (Llama-style or GPT-2)"


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
    # Replace a non-empty output folder.
    force: bool = False


def run(args: Args) -> int:
    from neurorit_lens.models.export import export_hf

    out = export_hf(args.model, args.out, force=args.force)
    print(f"wrote {out}")
    return 0
