"""RAG QA data: schema, loaders, context builder, prompt templates, the embedded default set.

Pipeline: ``load_examples`` (or ``embedded_examples``) -> ``split_examples`` ->
``build_instances(examples, "noise=0.4")`` -> ``render_prompts(instances, tokenizer)``.
"""

from .distractors import BM25, add_distractors
from .embedded import embedded_examples
from .loaders import FORMATS, LoadResult, detect_format, load_examples
from .prompts import (
    RenderedPrompts,
    answer_continuation,
    render_prompt,
    render_prompts,
    resolve_template,
)
from .records import DataError
from .schema import Label, Passage, QAExample, RAGInstance
from .settings import VALID_SETTINGS, BuiltInstances, Setting, build_instances, parse_setting
from .splits import load_split, split_examples
from .text import contains_answer, normalize_answer, normalize_question

__all__ = [
    "BM25",
    "FORMATS",
    "VALID_SETTINGS",
    "BuiltInstances",
    "DataError",
    "Label",
    "LoadResult",
    "Passage",
    "QAExample",
    "RAGInstance",
    "RenderedPrompts",
    "Setting",
    "add_distractors",
    "answer_continuation",
    "build_instances",
    "contains_answer",
    "detect_format",
    "embedded_examples",
    "load_examples",
    "load_split",
    "normalize_answer",
    "normalize_question",
    "parse_setting",
    "render_prompt",
    "render_prompts",
    "resolve_template",
    "split_examples",
]
