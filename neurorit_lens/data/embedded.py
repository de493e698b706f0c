"""The embedded default dataset: questions about invented entities, so no model can know the facts.

A small fictional world is generated from a seed: countries, towns, people, companies and
rivers with invented names (syllable strings, no name a substring of another), and
functional relations between them (capital, president, independence year, mayor, river,
town founding year, birthplace, birth year, employer, founder, company founding year,
headquarters). Every (subject, relation) fact becomes one question. Each example has

* 5 relevant passages: the fact stated with different wordings and a filler sentence
  about the subject (so ``noise=R`` settings with 5 passages work at every ratio);
* 8 irrelevant "hard" distractors: 6 state the SAME relation about other entities of the
  same type ("The capital of Orvania is Quelmet."), 2 state OTHER relations about the SAME
  entity ("Velmoria became independent in 1812.") -- none contains the answer;
* 1 counterfactual passage: the same fact with a wrong object of the right type.

Questions are balanced across relations and unique after normalisation. Everything is
deterministic given ``(n, seed)`` and needs no file, so the main job runs anywhere.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from neurorit_lens.data.schema import Label, Passage, QAExample
from neurorit_lens.data.text import contains_answer, normalize_answer

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "sk", "st",
           "t", "tr", "v", "vr", "z", "th", "ph", "x"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "x", "nd", "rk", "sh"]
_COUNTRY_SUFFIX = ["ia", "ora", "mark", "heim", "avia", "ovia"]
_TOWN_SUFFIX = ["ton", "mere", "wick", "stad", "vale", "gard", "holm", "ford"]
_COMPANY_SUFFIX = ["Industries", "Works", "Holdings", "Trading Company", "Foundry", "Mills"]


@dataclass(frozen=True)
class _Relation:
    name: str
    subject: str  # entity type
    obj: str  # entity type or "year"
    question: str
    statements: tuple[str, ...]


_RELATIONS = (
    _Relation("capital", "country", "town", "What is the capital of {s}?",
              ("The capital of {s} is {o}.", "{o} is the capital city of {s}.",
               "{s} is governed from its capital, {o}.")),
    _Relation("president", "country", "person", "Who is the president of {s}?",
              ("The president of {s} is {o}.", "{o} serves as president of {s}.", "{s} is led by its president, {o}.")),
    _Relation("independence", "country", "year", "In what year did {s} become independent?",
              ("{s} became independent in {o}.", "In {o}, {s} gained its independence.",
               "The independence of {s} dates from {o}.")),
    _Relation("mayor", "town", "person", "Who is the mayor of {s}?",
              ("The mayor of {s} is {o}.", "{o} is the mayor of the town of {s}.", "{s} elected {o} as its mayor.")),
    _Relation("river", "town", "river", "Which river flows through {s}?",
              ("The river {o} flows through {s}.", "{s} lies on the banks of the river {o}.",
               "The town of {s} is crossed by the river {o}.")),
    _Relation("town_founded", "town", "year", "In what year was the town of {s} founded?",
              ("The town of {s} was founded in {o}.", "{s} was established as a town in {o}.",
               "Settlers founded {s} in {o}.")),
    _Relation("born_in", "person", "town", "In which town was {s} born?",
              ("{s} was born in the town of {o}.", "The birthplace of {s} is {o}.",
               "{s} grew up in {o}, where they were born.")),
    _Relation("birth_year", "person", "year", "In what year was {s} born?",
              ("{s} was born in the year {o}.", "The birth year of {s} is {o}.", "In {o}, {s} was born.")),
    _Relation("employer", "person", "company", "Which company does {s} work for?",
              ("{s} works for {o}.", "{s} is employed by {o}.", "{o} employs {s}.")),
    _Relation("founder", "company", "person", "Who founded {s}?",
              ("{s} was founded by {o}.", "{o} is the founder of {s}.", "{o} started {s}.")),
    _Relation("company_founded", "company", "year", "In what year was {s} founded?",
              ("{s} was founded in {o}.", "{s} opened its doors in {o}.", "The founding year of {s} is {o}.")),
    _Relation("headquarters", "company", "town", "In which town is {s} headquartered?",
              ("{s} is headquartered in {o}.", "The headquarters of {s} are in {o}.",
               "{s} has its head office in {o}.")),
)

_FILLERS = {
    "country": ("{s} is a small country known for its cold northern coast.",
                "Travellers describe {s} as a land of hills and slow rivers.",
                "{s} exports wool, timber and dried fish."),
    "town": ("{s} is known for its weekly market and narrow streets.",
             "The old stone bridge of {s} is a local landmark.",
             "{s} has a population of a few thousand people."),
    "person": ("{s} is often mentioned in regional newspapers.",
               "Friends describe {s} as patient and curious.",
               "{s} enjoys long walks and chess."),
    "company": ("{s} employs several hundred people.",
                "{s} is known for its careful bookkeeping.",
                "The annual report of {s} was published last spring."),
}

N_RELEVANT = 5
N_SAME_RELATION = 6
N_SAME_ENTITY = 2
MAX_N = 1000
_YEARS = (1200, 2020)


class _Names:
    """Unique invented names, none a substring of another (normalised)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: list[str] = []

    def _stem(self, syllables: int) -> str:
        s = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                    for _ in range(syllables))
        return s.capitalize()

    def _ok(self, name: str) -> bool:
        n = normalize_answer(name)
        if len(n) < 4:
            return False
        return all(n not in u and u not in n for u in self.used)

    def new(self, kind: str) -> str:
        for _ in range(10_000):
            r = self.rng
            if kind == "country":
                name = self._stem(2) + r.choice(_COUNTRY_SUFFIX)
            elif kind == "town":
                name = self._stem(1) + r.choice(_TOWN_SUFFIX)
            elif kind == "person":
                name = f"{self._stem(2)} {self._stem(2)}"
            elif kind == "company":
                name = f"{self._stem(2)} {r.choice(_COMPANY_SUFFIX)}"
            elif kind == "river":
                name = self._stem(2)
            else:  # pragma: no cover
                raise ValueError(kind)
            key = normalize_answer(name.split()[0]) if kind == "company" else normalize_answer(name)
            if self._ok(name) and all(key not in u for u in self.used):
                self.used.append(normalize_answer(name))
                return name
        raise RuntimeError("could not generate a unique name")  # pragma: no cover


def _world(n_per_type: int, rng: random.Random) -> tuple[dict[tuple[str, str], str], dict[str, list[str]]]:
    """Facts ``(subject, relation) -> object`` and the entities, ``n_per_type`` entities per type."""
    names = _Names(rng)
    e = n_per_type
    ents = {"country": [names.new("country") for _ in range(e)],
            "town": [names.new("town") for _ in range(2 * e)],
            "person": [names.new("person") for _ in range(3 * e)],
            "company": [names.new("company") for _ in range(e)],
            "river": [names.new("river") for _ in range(2 * e)]}
    years = [str(y) for y in rng.sample(range(_YEARS[0], _YEARS[1]), 7 * e)]
    year_iter = iter(years)
    facts: dict[tuple[str, str], str] = {}
    # injective assignments where it makes sense (no two capitals the same, unique people per role)
    towns = rng.sample(ents["town"], len(ents["town"]))
    people = rng.sample(ents["person"], len(ents["person"]))
    rivers = rng.sample(ents["river"], len(ents["river"]))
    for i, c in enumerate(ents["country"]):
        facts[(c, "capital")] = towns[i]
        facts[(c, "president")] = people[i]
        facts[(c, "independence")] = next(year_iter)
    for i, t in enumerate(ents["town"]):
        facts[(t, "mayor")] = people[e + i % e] if i < e else people[2 * e + i % e]
        facts[(t, "river")] = rivers[i]
        facts[(t, "town_founded")] = next(year_iter)
    hq = rng.sample(ents["town"], e)
    for i, co in enumerate(ents["company"]):
        facts[(co, "founder")] = people[(i * 7 + 3) % len(people)]
        facts[(co, "company_founded")] = next(year_iter)
        facts[(co, "headquarters")] = hq[i]
    for p in ents["person"]:
        facts[(p, "born_in")] = rng.choice(ents["town"])
        facts[(p, "birth_year")] = next(year_iter)
        facts[(p, "employer")] = rng.choice(ents["company"])
    return facts, ents


def embedded_examples(n: int = 200, seed: int = 0) -> list[QAExample]:
    """A fictional-knowledge QA set with gold passages and hard distractors, generated in code.

    Args:
        n: number of questions (balanced across the 12 relations).
        seed: world and sampling seed; the same ``(n, seed)`` always gives the same examples.

    Returns:
        ``n`` examples, each with 5 relevant, 8 irrelevant and 1 counterfactual passage
        (``source="embedded"``, ``meta={"relation", "subject"}``).

    >>> exs = embedded_examples(24)
    >>> len(exs), len(exs[0].relevant), len(exs[0].irrelevant), len(exs[0].counterfactual)
    (24, 5, 8, 1)
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if n > MAX_N:
        raise ValueError(f"n must be <= {MAX_N} for the embedded set, got {n}")
    rng = random.Random(f"neurorit-embedded:{seed}")
    per_type = max(8, math.ceil(n / 12) + 4)
    facts, ents = _world(per_type, rng)
    by_relation: dict[str, list[tuple[str, str]]] = {r.name: [] for r in _RELATIONS}
    for (s, rel), o in facts.items():
        by_relation[rel].append((s, o))
    for rel in by_relation:
        rng.shuffle(by_relation[rel])
    return [_example(seed, idx, s, rname, o, facts, ents, by_relation)
            for idx, (s, rname, o) in enumerate(_round_robin(by_relation, n))]


def _round_robin(by_relation: dict[str, list[tuple[str, str]]], n: int) -> list[tuple[str, str, str]]:
    """``n`` (subject, relation, object) facts, taken round-robin over the relations for balance."""
    order: list[tuple[str, str, str]] = []
    depth = 0
    while len(order) < n:
        for r in _RELATIONS:
            lst = by_relation[r.name]
            if depth < len(lst) and len(order) < n:
                order.append((lst[depth][0], r.name, lst[depth][1]))
        depth += 1
    return order


def _passage(rel: _Relation, s: str, o: str, t: int, f: int, label: Label, kind: str) -> Passage:
    """Statement ``t`` of ``rel`` about ``(s, o)`` with filler ``f``, in an order set by ``t + f``."""
    filler = _FILLERS[rel.subject][f % len(_FILLERS[rel.subject])].format(s=s)
    stmt = rel.statements[t % len(rel.statements)].format(s=s, o=o)
    text = f"{stmt} {filler}" if (t + f) % 2 == 0 else f"{filler} {stmt}"
    return Passage(text, title=s, label=label, has_answer=label == Label.RELEVANT, kind=kind)


def _distractors(rel: _Relation, s: str, o: str, facts: dict, by_relation: dict, rng: random.Random
                 ) -> list[Passage]:
    """Hard irrelevant passages: the same relation about other subjects, then the same subject's
    other relations; none contains the answer ``o``."""
    answers = [o]
    others = [(s2, o2) for s2, o2 in by_relation[rel.name] if s2 != s and o2 != o]
    rng.shuffle(others)
    irr: list[Passage] = []
    for s2, o2 in others:
        if len(irr) == N_SAME_RELATION:
            break
        p = _passage(rel, s2, o2, rng.randrange(3), rng.randrange(3), Label.IRRELEVANT, "same_relation")
        if not contains_answer(p.title + " " + p.text, answers):
            irr.append(p)
    same = [r for r in _RELATIONS if r.subject == rel.subject and r.name != rel.name]
    rng.shuffle(same)
    k_same = 0
    for r2 in same:
        if k_same == N_SAME_ENTITY:
            break
        p = _passage(r2, s, facts[(s, r2.name)], rng.randrange(3), rng.randrange(3), Label.IRRELEVANT,
                     "same_entity")
        if not contains_answer(p.title + " " + p.text, answers):
            irr.append(p)
            k_same += 1
    return irr


def _example(seed: int, idx: int, s: str, rname: str, o: str, facts: dict, ents: dict,
             by_relation: dict) -> QAExample:
    """Question ``idx``: its relevant wordings, hard distractors and one counterfactual passage."""
    rel = next(r for r in _RELATIONS if r.name == rname)
    ex_rng = random.Random(f"neurorit-embedded:{seed}:{idx}")
    answers = [o]
    combos = [(t, f) for f in range(3) for t in range(3)]
    ex_rng.shuffle(combos)
    combos.sort(key=lambda tf: tf != (0, 0))  # the canonical wording first
    rel_p = [_passage(rel, s, o, t, f, Label.RELEVANT, "gold") for t, f in combos[:N_RELEVANT]]
    irr = _distractors(rel, s, o, facts, by_relation, ex_rng)
    # counterfactual: a wrong object of the right type
    years = range(_YEARS[0], _YEARS[1])
    pool = [str(y) for y in ex_rng.sample(years, 20)] if rel.obj == "year" else list(ents[rel.obj])
    wrong = next(w for w in ex_rng.sample(pool, len(pool))
                 if not contains_answer(w, answers) and not contains_answer(o, [w]))
    cf = _passage(rel, s, wrong, 0, ex_rng.randrange(3), Label.COUNTERFACTUAL, "counterfactual")
    ex_rng.shuffle(irr)
    return QAExample(id=f"emb-{seed}-{idx:04d}", question=rel.question.format(s=s), answers=answers,
                     passages=rel_p + irr + [cf], source="embedded",
                     meta={"relation": rname, "subject": s, "counterfactual_answer": wrong})
