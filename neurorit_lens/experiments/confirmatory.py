"""The component study's confirmatory run (docs/study.md, "The confirmatory run"): the chosen configuration
against the baselines, on fresh questions, once.

    neurorit study benchmarks/configs/study_dev.json --out runs/study/confirm --confirmatory \\
        --chosen runs/study/dev/chosen.json --mining runs/study/mining

Inputs: the study configuration (its ``confirmatory`` block) and the dev run's ``chosen.json``,
which records the fingerprint of the configuration it was chosen under; a ``chosen.json`` of
another configuration is refused (one without the fingerprint is checked against the
``protocol.json`` beside it). ``protocol.json`` records both before any unit runs.

- **Arms**: ``chosen`` (``train``, then chosen.json's TrainConfig overrides, with its sets and
  deactivation) and each baseline method (``layers``, ``full``, ``clean``) at its declared
  learning rate, for the chosen configuration's optimizer steps (its ``stage1_steps`` plus
  ``steps`` under ``stage1_extra``; a baseline's warmup and cosine run over all of them). Every
  arm reads the dev study's training items (the first ``train_limit`` train questions of each
  data set, pooled) in the same order, with BM25 distractors when chosen.json says so. A
  baseline that ranks layers (``layers``) uses the chosen sets; ``full`` and ``clean`` use none.
  One resumable unit per (arm, seed): ``train/<arm>/seed<k>/``.
- **Questions** (:meth:`Confirmatory.fresh`): per data set, ``split[start:start+limit]`` of the
  declared file split as the study splits it, or (``split: all``) the first ``limit`` questions
  of the draw that :func:`~neurorit_lens.data.fresh.unseen` keeps against the declared seen
  draws. Before anything is scored, :func:`~neurorit_lens.data.fresh.overlap` must find none of
  them in the dev study's train and dev questions, in the other splits and the split's first
  ``start`` questions of a split file, and in the seen draws; ``fresh.json`` records the counts
  (all 0) and the ids, and a run with any overlap is refused.
- **Scores**: ``eval/<arm>/seed<k>/<data set>/<setting>.json``, per question the extracted answer's
  accuracy and the teacher-forced log p(gold), as the dev run scores them.

Then ``report_confirmatory.{json,md}`` (:mod:`neurorit_lens.experiments.confirmatory_report`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from neurorit_lens.config import DataConfig, TrainConfig
from neurorit_lens.experiments.protocol import shared_data
from neurorit_lens.experiments.study import DEFAULT_MINING, TRAIN_OUTPUTS, Study, execute, optimizer_steps
from neurorit_lens.experiments.study_config import CHOSEN, Arm, ConfirmatorySpec, StudyConfig, load_study_config
from neurorit_lens.experiments.study_mining import require_mining, sets_needed
from neurorit_lens.io import atomic_write_json, fingerprint, read_json
from neurorit_lens.stages import read_record, run_stage

__all__ = ["NO_SETS", "Confirmatory", "confirm", "read_chosen"]

log = logging.getLogger("neurorit_lens.experiments")
NO_SETS = ("full", "clean")  # baseline methods that train without neuron sets
CHOSEN_KEYS = ("sets", "train_distractors", "train_overrides")


def read_chosen(path: str | os.PathLike, cfg: StudyConfig) -> dict[str, Any]:
    """The dev run's ``chosen.json``, checked to come from ``cfg``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: it was chosen under another configuration, or it lacks a key the run reads.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no chosen.json; the dev run writes it once every row the declared rule "
                                "reads is in (neurorit study CONFIG --out DEV --report)")
    chosen = read_json(path)
    want = fingerprint(cfg.declared)
    got = chosen.get("protocol")
    if got is None:  # written before chosen.json recorded it: the dev folder's protocol.json says
        proto = path.parent / "protocol.json"
        if not proto.exists():
            raise ValueError(f"{path}: records no protocol fingerprint and {proto} is missing; cannot tell which "
                             "configuration it was chosen under")
        got = fingerprint(read_json(proto)["config"])
    if got != want:
        raise ValueError(f"{path}: chosen under another configuration (protocol fingerprint {got}, this "
                         f"configuration's {want}); use the chosen.json of a dev run of this configuration")
    missing = [k for k in CHOSEN_KEYS if k not in chosen]
    if missing:
        raise ValueError(f"{path}: lacks {missing}")
    return chosen


class Confirmatory(Study):
    """One confirmatory run folder ``out`` (module docstring)."""

    eval_split = "fresh"

    def __init__(self, cfg: StudyConfig, out: str | os.PathLike, chosen: str | os.PathLike,
                 mining: str | os.PathLike = DEFAULT_MINING, device: str | None = None, progress: bool = True):
        if cfg.confirmatory is None:
            raise ValueError("the configuration declares no 'confirmatory' block")
        super().__init__(cfg, out, mining, device=device, progress=progress)
        self.spec: ConfirmatorySpec = cfg.confirmatory
        self.chosen_path = Path(chosen)
        self.chosen = read_chosen(chosen, cfg)
        self._fresh: dict[tuple[str, str], list] = {}
        self._guarded = False

    # --- arms -------------------------------------------------------------------------------
    def arm(self, name: str) -> Arm:
        """``chosen`` as chosen.json names it, or a baseline method with the chosen sets and distractors."""
        ch = self.chosen
        if name == CHOSEN:
            return Arm(CHOSEN, ch["sets"], None, ch["train_distractors"], ch.get("i_excl_from"),
                       dict(ch["train_overrides"]))
        return Arm(name, ch["sets"], None, ch["train_distractors"], None, {"method": name})

    def chosen_steps(self) -> int:
        return optimizer_steps(TrainConfig.from_dict({**self.cfg.train, **self.chosen["train_overrides"]}))

    def train_config_of(self, name: str, seed: int) -> TrainConfig:
        """``train`` then chosen.json's overrides (``chosen``), or the baseline's method, LR and total steps."""
        if name == CHOSEN:
            return TrainConfig.from_dict({**self.cfg.train, **self.chosen["train_overrides"], "seed": seed})
        return TrainConfig.from_dict({**self.cfg.train, "method": name, "lr": self.spec.lrs[name],
                                      "steps": self.chosen_steps(), "seed": seed})

    def runs(self) -> list[tuple[str, int]]:
        return [(a, s) for a in self.spec.arms for s in self.spec.seeds]

    @staticmethod
    def key(arm: str, seed: int) -> str:
        return f"{arm}/seed{seed}"

    # --- protocol ---------------------------------------------------------------------------
    def declared(self) -> dict[str, Any]:
        return {"config": self.cfg.declared, "chosen": self.chosen}

    def protocol(self, write: bool = True) -> dict[str, Any]:
        """``protocol.json``: the configuration and chosen.json; a rerun with either changed is refused."""
        path = self.out / "protocol.json"
        if path.exists():
            proto = read_json(path)
            if not proto.get("confirmatory") or fingerprint({k: proto.get(k) for k in ("config", "chosen")}) != \
                    fingerprint(self.declared()):
                raise ValueError(f"{path}: this folder was made for another configuration or chosen.json "
                                 "(or is a dev run's); run in another --out folder")
            return proto
        proto = {"confirmatory": True, **self.declared(), "chosen_path": str(self.chosen_path),
                 "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if write:
            atomic_write_json(path, proto)
        return proto

    def unit_inputs(self, rel: str, **extra: Any) -> dict[str, Any]:
        return {"protocol": fingerprint(self.declared()), "unit": rel, **extra}

    # --- questions --------------------------------------------------------------------------
    def fresh_cfg(self, dataset: str, distractors: str = "random") -> DataConfig:
        q, c = self.spec.questions[dataset], self.cfg
        return DataConfig(data=q.data.replace("{shared}", str(shared_data())), format=q.format, split=q.split,
                          split_fractions=c.split_fractions, seed=c.data_seed, n_passages=c.n_passages,
                          template=c.template, max_prompt_tokens=c.max_prompt_tokens, n_distractors=c.n_distractors,
                          distractors=distractors)

    def _fresh_and_seen(self, dataset: str, distractors: str) -> tuple[list, dict[str, list]]:
        """The fresh questions and, per source, the questions they must not overlap."""
        from neurorit_lens.data.fresh import draw, fresh_draw, split_fresh
        from neurorit_lens.data.splits import load_split, load_splits

        q, dcfg = self.spec.questions[dataset], self.fresh_cfg(dataset, distractors)
        if not dcfg.data.startswith(("embedded", "hf:")) and not Path(dcfg.data).exists():
            raise FileNotFoundError(f"fresh questions {dataset!r}: {dcfg.data} not found (set NEURORIT_SHARED_DATA)")
        seen: dict[str, list] = {}
        declared_seen = self.spec.seen.get(dataset, ())
        draws = list(declared_seen) if isinstance(declared_seen, tuple) else []
        if q.split == "all":
            fresh, by_draw = fresh_draw(load_split(dcfg), draws, q.limit, q.start)
            seen["seen draws " + ", ".join(draws)] = by_draw
        else:
            fresh, earlier = split_fresh(load_splits(dcfg)[1], q.split, q.start, q.limit)
            seen[f"other splits and the first {q.start} {q.split} questions"] = earlier
            for d in draws:
                seen[f"seen draw {d}"] = draw(d)
        for d in self.cfg.datasets:
            seen[f"dev study {d} train and dev questions"] = self.examples(d, "train") + self.examples(d, "dev")
        if len(fresh) < q.limit:
            log.warning("fresh questions %s: %d, fewer than the declared %d", dataset, len(fresh), q.limit)
        return fresh, seen

    def fresh(self, dataset: str, distractors: str = "random") -> list:
        """``dataset``'s fresh questions (distractors drawn within their split); guarded (:meth:`guard`)."""
        key = (dataset, distractors)
        if key not in self._fresh:
            self._fresh[key] = self._fresh_and_seen(dataset, distractors)[0]
            base = self.fresh(dataset) if distractors != "random" else self._fresh[key]
            if [e.id for e in self._fresh[key]] != [e.id for e in base]:
                raise ValueError(f"fresh questions {dataset!r}: the {distractors} load picks other questions")
        return self._fresh[key]

    def guard(self) -> dict[str, Any]:
        """Refuse fresh questions that overlap any seen question; write ``fresh.json`` (counts and ids)."""
        from neurorit_lens.data.fresh import overlap

        blob: dict[str, Any] = {}
        for d in self.spec.questions:
            fresh, seen = self._fresh_and_seen(d, "random")
            self._fresh[(d, "random")] = fresh
            counts = {src: len(overlap(fresh, exs)) for src, exs in seen.items()}
            blob[d] = {"n": len(fresh), "declared_limit": self.spec.questions[d].limit, "overlap": counts,
                       "seen_sizes": {src: len(exs) for src, exs in seen.items()}, "ids": [e.id for e in fresh]}
        atomic_write_json(self.out / "fresh.json", blob)
        bad = {d: {s: n for s, n in b["overlap"].items() if n} for d, b in blob.items()}
        bad = {d: v for d, v in bad.items() if v}
        if bad:
            raise ValueError(f"fresh questions overlap questions earlier runs saw: {bad} (fresh.json); "
                             "nothing is scored")
        self._guarded = True
        return blob

    def eval_examples(self, dataset: str, distractors: str = "random") -> list:
        if not self._guarded:
            self.guard()
        return self.fresh(dataset, distractors)

    # --- units ------------------------------------------------------------------------------
    def train_run(self, name: str, seed: int) -> Path:
        """``train/<arm>/seed<k>/``: trained unless done; resumed from its checkpoints."""
        arm, key = self.arm(name), self.key(name, seed)
        tcfg = self.train_config_of(name, seed)
        sets_dir = self.sets_unit(arm) if name not in NO_SETS else None
        d = self.out / "train" / key
        inputs = self.unit_inputs(f"train/{key}", train=tcfg.to_dict(), distractors=arm.train_distractors,
                                  sets=read_record(sets_dir)["fingerprint"] if sets_dir is not None else None)
        run_stage(d, inputs, TRAIN_OUTPUTS, lambda: self._train(arm, d, sets_dir, tcfg), name=f"train/{key}",
                  unrecorded="adopt", stale="refuse")
        return d

    def settings_of(self, dataset: str) -> tuple[str, ...]:
        return self.spec.settings[dataset]

    def plan(self) -> dict[str, Any]:
        """The units and what is done (no model, no data loaded)."""
        runs = {}
        for a, s in self.runs():
            key, tcfg = self.key(a, s), self.train_config_of(a, s)
            rec = read_record(self.out / "train" / key)
            evals = [(d, st) for d in self.spec.questions for st in self.settings_of(d)]
            runs[key] = {"method": tcfg.method, "lr": tcfg.lr, "seed": s, "optimizer_steps": optimizer_steps(tcfg),
                         "sets": None if a in NO_SETS else self.arm(a).sets,
                         "train_distractors": self.chosen["train_distractors"],
                         "trained": bool(rec.get("complete")) and all((self.out / "train" / key / o).exists()
                                                                         for o in TRAIN_OUTPUTS),
                         "evaluated": sum(self.eval_path(key, d, st).exists() for d, st in evals),
                         "eval_units": len(evals)}
        return {"out": str(self.out), "chosen": str(self.chosen_path), "mining": str(self.mining),
                "questions": {d: q.to_dict() for d, q in self.spec.questions.items()},
                "settings": {d: list(v) for d, v in self.spec.settings.items()}, "runs": runs}

    def run(self) -> dict[str, Any]:
        """Guard the questions, then per (arm, seed) its training and its scores, then the report."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.protocol()
        self.guard()
        need = [s for a in self.spec.arms if a not in NO_SETS for s in sets_needed(self.arm(a))]
        require_mining(self.cfg, self.mining, need)
        for a, seed in self.runs():
            self.train_run(a, seed)
            for d in self.spec.questions:
                for st in self.settings_of(d):
                    self.eval_unit(self.key(a, seed), d, st)
            self.write_report()
        return self.write_report()

    def write_report(self) -> dict[str, Any]:
        from neurorit_lens.experiments.confirmatory_report import write_report

        return write_report(self.cfg, self.out)


def confirm(config: str | os.PathLike, out: str | os.PathLike, chosen: str | os.PathLike, *,
            mining: str | os.PathLike = DEFAULT_MINING, plan: bool = False, report: bool = False,
            device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """``neurorit study CONFIG --confirmatory --chosen DEV/chosen.json``: plan, report or run the confirmatory run."""
    s = Confirmatory(load_study_config(config), out, chosen, mining, device=device, progress=progress)
    return execute(s, plan=plan, report=report)
