"""DataConfig.instruction / system_prompt: the prompt wording through the one prompt path
(unset = today's text, byte for byte)."""

from __future__ import annotations

import pytest

from neurorit_lens.config import DataConfig
from neurorit_lens.data import embedded_examples
from neurorit_lens.data.build import build_prompts
from neurorit_lens.data.prompts import INSTRUCTION, SYSTEM_PROMPT, format_passage
from neurorit_lens.models.tiny import tiny_tokenizer


def test_instruction_and_system_prompt_reach_the_prompts_and_default_is_unchanged():
    tok, exs = tiny_tokenizer(), embedded_examples(3)
    plain = build_prompts(exs, "gold+1", tok, DataConfig(template="plain"))
    inst = plain.instances[0]
    docs = "\n".join(format_passage(i + 1, p) for i, p in enumerate(inst.passages))
    assert plain.prompts[0] == f"{INSTRUCTION}\n\n{docs}\n\nQuestion: {inst.question}\nAnswer:"  # unchanged
    mine = build_prompts(exs, "gold+1", tok, DataConfig(template="plain", instruction="Say the answer only."))
    assert mine.prompts[0] == f"Say the answer only.\n\n{docs}\n\nQuestion: {inst.question}\nAnswer:"
    chat = build_prompts(exs, "gold", tok, DataConfig(template="chat"))
    assert f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>" in chat.prompts[0]
    chat2 = build_prompts(exs, "gold", tok, DataConfig(template="chat", system_prompt="Be brief."))
    assert chat2.prompts[0] == chat.prompts[0].replace(SYSTEM_PROMPT, "Be brief.")
    closed = build_prompts(exs, "closed", tok, DataConfig(template="plain", instruction="Say the answer only."))
    assert closed.prompts[0].startswith("Answer the question. Reply")  # the closed-book instruction stays


def test_empty_wording_is_an_error():
    with pytest.raises(ValueError, match="instruction"):
        DataConfig(instruction="  ")
    with pytest.raises(ValueError, match="system_prompt"):
        DataConfig(system_prompt="")
