"""One schema for RAG QA examples: a question, gold answers (with aliases), labelled passages."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Label(str, Enum):
    RELEVANT = "relevant"
    IRRELEVANT = "irrelevant"
    COUNTERFACTUAL = "counterfactual"
    UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class Passage:
    text: str
    title: str = ""
    label: Label = Label.UNLABELLED
    has_answer: bool | None = None
    kind: str = ""  # where it came from in the source data, e.g. "negative", "semantic noise", "distractor:bm25"

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ValueError(f"passage text must be a string, got {type(self.text).__name__}")
        object.__setattr__(self, "label", Label(self.label))

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "title": self.title, "label": self.label.value, "has_answer": self.has_answer,
                "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Passage:
        return cls(text=d["text"], title=d.get("title", "") or "", label=Label(d.get("label", "unlabelled")),
                   has_answer=d.get("has_answer"), kind=d.get("kind", "") or "")


@dataclass
class QAExample:
    """A question with gold answers (first is canonical, the rest aliases) and passages."""

    id: str
    question: str
    answers: list[str]
    passages: list[Passage] = field(default_factory=list)
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"example {self.id!r}: empty question")
        if not self.answers or not all(isinstance(a, str) and a.strip() for a in self.answers):
            raise ValueError(f"example {self.id!r}: needs at least one non-empty answer string")

    @property
    def answer(self) -> str:
        return self.answers[0]

    def with_label(self, label: Label) -> list[Passage]:
        return [p for p in self.passages if p.label == label]

    @property
    def relevant(self) -> list[Passage]:
        return self.with_label(Label.RELEVANT)

    @property
    def irrelevant(self) -> list[Passage]:
        return self.with_label(Label.IRRELEVANT)

    @property
    def counterfactual(self) -> list[Passage]:
        return self.with_label(Label.COUNTERFACTUAL)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answers": list(self.answers),
                "passages": [p.to_dict() for p in self.passages], "source": self.source, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QAExample:
        return cls(id=str(d["id"]), question=d["question"], answers=list(d["answers"]),
                   passages=[Passage.from_dict(p) for p in d.get("passages", [])],
                   source=d.get("source", ""), meta=dict(d.get("meta", {})))


@dataclass(frozen=True)
class RAGInstance:
    """One example under one noise setting: the ordered passages that go in the prompt."""

    example: QAExample
    setting: str
    passages: tuple[Passage, ...]
    gold_positions: tuple[int, ...] = ()

    @property
    def question(self) -> str:
        return self.example.question

    @property
    def answers(self) -> list[str]:
        return self.example.answers

    @property
    def id(self) -> str:
        return self.example.id
