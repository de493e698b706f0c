"""The component study on dev (docs/study.md): one training per arm, scored paired on the same questions.

    neurorit study benchmarks/configs/study_dev.json --out runs/study/dev --mining runs/study/mining

The configuration (:mod:`neurorit_lens.experiments.study_config`) fixes everything before the
run; ``protocol.json`` records it before any unit runs, and a rerun in that folder with another
configuration is refused. Units, each resumable by the runner's rule
(:mod:`neurorit_lens.stages`: a finished unit is skipped, an unfinished one runs again in place,
a unit made from other inputs is refused, nothing is deleted):

1. ``sets/<key>/``: the neuron sets an arm trains with, pooled over the data sets' mining
   folders with the declared selection (:mod:`neurorit_lens.experiments.study_mining`), and
   their split-half stability. Its record holds a hash of each mining folder's ``neurons.json``,
   so sets mined again later are refused, not silently mixed with runs trained on the old ones.
2. ``train/<arm>/``: the arm's training on the first ``train_limit`` train questions of each
   data set, pooled and shuffled as the comparison pools them (distractors drawn within the
   split; ``train_distractors: bm25`` loads gold-only data with BM25 distractors, a data set
   with its own irrelevant passages keeps them). Checkpoints every ``checkpoint_every`` steps,
   so a killed training resumes from the last one; ``train_log.jsonl`` records each step's
   items and learning rate.
3. ``eval/<arm>/<data set>/<setting>.json``: per dev question, the extracted answer's accuracy
   and the teacher-forced log p(gold) (:func:`neurorit_lens.experiments.scoring.score_questions`);
   ``gold+4@bm25`` scores gold plus 4 BM25 distractors (the data loaded with BM25 distractors).
   One file per unit, written atomically.

Then ``report.json``, ``report.md`` and ``chosen.json``
(:mod:`neurorit_lens.experiments.study_report`). ``--arms`` runs some arms only (workers may
share a folder); ``--plan`` lists the units and what each lacks, loading no model and no data.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from neurorit_lens.config import DataConfig, EvalConfig, TrainConfig
from neurorit_lens.data.settings import parse_setting
from neurorit_lens.experiments.protocol import shared_data
from neurorit_lens.experiments.results import _clean, record_peak
from neurorit_lens.experiments.study_config import Arm, StudyConfig, load_study_config
from neurorit_lens.experiments.study_mining import (
    MINE_COMMAND,
    arm_sets_key,
    folder_mismatches,
    mining_status,
    require_mining,
    sets_needed,
    sources_fingerprint,
    write_arm_sets,
)
from neurorit_lens.io import atomic_write_json, environment_info, fingerprint, read_json
from neurorit_lens.memory import PeakRSS
from neurorit_lens.stages import open_stage, read_record, run_stage

__all__ = ["DEFAULT_MINING", "Study", "execute", "optimizer_steps", "study"]

log = logging.getLogger("neurorit_lens.experiments")
DEFAULT_MINING = Path("runs") / "study" / "mining"
TRAIN_OUTPUTS = ["train.json", "model/neurorit_model.json"]


def optimizer_steps(tcfg: TrainConfig) -> int:
    """The optimizer steps a training takes: ``steps``, plus stage 1's under ``stage1_extra``."""
    return tcfg.steps + ((tcfg.stage1_steps or 0) if tcfg.method == "neurorit"
                         and tcfg.stage_schedule == "stage1_extra" else 0)


class Study:
    """One study run folder ``out`` (module docstring)."""

    def __init__(self, cfg: StudyConfig, out: str | os.PathLike, mining: str | os.PathLike = DEFAULT_MINING,
                 device: str | None = None, arms: list[str] | None = None, progress: bool = True):
        self.cfg, self.out, self.mining, self.progress = cfg, Path(out), Path(mining), progress
        if arms is not None:
            unknown = [a for a in arms if a not in cfg.arm_specs]
            if unknown or not arms:
                raise ValueError(f"--arms {','.join(arms)!r}: each must be one of the configuration's arms "
                                 f"{list(cfg.arm_specs)}")
        self.arms = [a for a in cfg.arm_specs if arms is None or a in arms]
        self.device = device or cfg.device
        self._splits: dict[tuple[str, str], dict[str, list]] = {}
        self._base: Any = None
        self._loaded: tuple[str, Any] | None = None
        self._open_evals: set[str] = set()
        self.n_trained = 0  # trainings this process ran (not skipped)
        self.n_evaluated = 0  # evaluation units this process computed

    # --- data -------------------------------------------------------------------------------
    def data_cfg(self, dataset: str, distractors: str = "random") -> DataConfig:
        c, spec = self.cfg, self.cfg.datasets[dataset]
        return DataConfig(data=spec.data.replace("{shared}", str(shared_data())), format=spec.format, split="all",
                          split_fractions=c.split_fractions, seed=c.data_seed, n_passages=c.n_passages,
                          template=c.template, max_prompt_tokens=c.max_prompt_tokens, n_distractors=c.n_distractors,
                          distractors=distractors)

    def examples(self, dataset: str, split: str, distractors: str = "random") -> list:
        """The first ``train_limit`` / ``dev_limit`` questions of ``split`` (distractors drawn within it)."""
        from neurorit_lens.data.splits import load_splits

        key = (dataset, distractors)
        if key not in self._splits:
            dcfg = self.data_cfg(dataset, distractors)
            if not dcfg.data.startswith(("embedded", "hf:")) and not Path(dcfg.data).exists():
                raise FileNotFoundError(f"data set {dataset!r}: {dcfg.data} not found (set NEURORIT_SHARED_DATA)")
            self._splits[key] = load_splits(dcfg)[1]
        limit = self.cfg.train_limit if split == "train" else self.cfg.dev_limit
        return self._splits[key][split][:limit]

    def train_pool(self, distractors: str = "random") -> list:
        """Every data set's training questions, pooled and shuffled as the comparison pools them."""
        exs = [ex for d in self.cfg.datasets for ex in self.examples(d, "train", distractors)]
        random.Random(f"pool:train:{self.cfg.data_seed}").shuffle(exs)
        return exs

    # --- protocol and unit records ------------------------------------------------------------
    def protocol(self, write: bool = True) -> dict[str, Any]:
        """``protocol.json``: written once; a rerun with another configuration is refused."""
        path = self.out / "protocol.json"
        if path.exists():
            proto = read_json(path)
            if proto.get("confirmatory"):
                raise ValueError(f"{path}: this folder holds a confirmatory run; run the dev study in another --out "
                                 "folder")
            if fingerprint(proto["config"]) != fingerprint(self.cfg.declared):
                diff = sorted(k for k in {*proto["config"], *self.cfg.declared}
                              if proto["config"].get(k) != self.cfg.declared.get(k))
                raise ValueError(f"{path}: this folder was made for another configuration (differs in {diff}); "
                                 "run in another --out folder")
            return proto
        proto = {"config": self.cfg.declared, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "environment": environment_info(self.cfg.train.get("seed", 0))}
        if write:
            atomic_write_json(path, proto)
        return proto

    def unit_inputs(self, rel: str, **extra: Any) -> dict[str, Any]:
        return {"protocol": fingerprint(self.cfg.declared), "unit": rel, **extra}

    # --- units ------------------------------------------------------------------------------
    @property
    def base(self) -> Any:
        if self._base is None:
            from neurorit_lens.models import load_model

            self._base = load_model(self.cfg.model, device=self.device)
        return self._base

    def sets_unit(self, arm: Arm) -> Path:
        """``sets/<key>/neurons.json``: the pooled sets ``arm`` trains with."""
        key = arm_sets_key(arm)
        d = self.out / "sets" / key
        require_mining(self.cfg, self.mining, sets_needed(arm))
        inputs = self.unit_inputs(f"sets/{key}", sources=sources_fingerprint(self.cfg, self.mining, sets_needed(arm)))
        run_stage(d, inputs, ["neurons.json"], lambda: write_arm_sets(self.cfg, self.mining, arm, d, self.base),
                  name=f"sets/{key}", unrecorded="adopt", stale="refuse")
        return d

    def train_unit(self, name: str) -> Path:
        """``train/<arm>/``: trained unless its ``train.json`` and model exist; resumed from its checkpoints."""
        arm = self.cfg.arm_specs[name]
        sets_dir = self.sets_unit(arm)
        d = self.out / "train" / name
        inputs = self.unit_inputs(f"train/{name}", sets=read_record(sets_dir)["fingerprint"])
        run_stage(d, inputs, TRAIN_OUTPUTS, lambda: self._train(arm, d, sets_dir), name=f"train/{name}",
                  unrecorded="adopt", stale="refuse")
        return d

    def _train(self, arm: Arm, d: Path, sets_dir: Path | None, tcfg: TrainConfig | None = None) -> None:
        """Train ``arm`` (``tcfg``: its TrainConfig, default the configuration's) into ``d``; ``sets_dir``
        ``None`` for a method that needs no neurons."""
        import torch

        from neurorit_lens.neurons.output import MiningOutput
        from neurorit_lens.training.inputs import prepare_training
        from neurorit_lens.training.methods import train

        tcfg = tcfg or self.cfg.train_config(arm)
        inputs = prepare_training(MiningOutput.load(sets_dir, self.base) if sets_dir is not None else None, tcfg)
        pool = self.train_pool(arm.train_distractors)
        log.info("training %s (%s, seed %d, sets %s, %s distractors) on %d questions", d.relative_to(self.out),
                 tcfg.method, tcfg.seed, arm_sets_key(arm) if sets_dir is not None else "-", arm.train_distractors,
                 len(pool))
        torch.manual_seed(tcfg.seed)
        self._loaded = None  # the last evaluated model is not needed while training
        model = copy.deepcopy(self.base)
        with PeakRSS() as mem:
            train(model, pool, None, inputs.sets, inputs.layer_mass, tcfg, self.data_cfg(next(iter(self.cfg.datasets))),
                  d, resume=True, base_model=self.cfg.model, progress=self.progress,
                  deactivation_values=inputs.deactivation_values)
        record_peak(d / "train.json", mem.peak_mb)
        self.n_trained += 1
        del model  # evaluation reloads the saved model, as a resumed run does

    def model_of(self, arm: str) -> Any:
        if self._loaded is None or self._loaded[0] != arm:
            from neurorit_lens.models import load_model

            self._loaded = None  # free the previous model first
            self._loaded = (arm, load_model(str(self.out / "train" / arm / "model"), device=self.device))
        return self._loaded[1]

    eval_split = "dev"  # what the scored questions are (an evaluation blob records it)

    def eval_examples(self, dataset: str, distractors: str = "random") -> list:
        """The questions every arm is scored on: the first ``dev_limit`` dev questions."""
        return self.examples(dataset, "dev", distractors)

    def eval_path(self, arm: str, dataset: str, setting: str) -> Path:
        return self.out / "eval" / arm / dataset / f"{setting}.json"

    def eval_unit(self, arm: str, dataset: str, setting: str) -> dict[str, Any]:
        """Per dev question of ``dataset``: accuracy and teacher-forced log p(gold) of ``arm`` at ``setting``."""
        from neurorit_lens.experiments.scoring import score_questions

        if arm not in self._open_evals:
            train_fp = read_record(self.out / "train" / arm).get("fingerprint")
            open_stage(self.out / "eval" / arm, self.unit_inputs(f"eval/{arm}", train=train_fp), name=f"eval/{arm}",
                       unrecorded="adopt", stale="refuse")
            self._open_evals.add(arm)
        path = self.eval_path(arm, dataset, setting)
        if path.exists():
            return read_json(path)
        distractors = parse_setting(setting).distractors or "random"
        exs = self.eval_examples(dataset, distractors)
        ecfg = EvalConfig.from_dict({**self.cfg.eval, "settings": [setting]})
        with PeakRSS() as mem:
            model, t0 = self.model_of(arm), time.perf_counter()
            records, summary = score_questions(model, exs, setting, ecfg, self.data_cfg(dataset, distractors), dataset,
                                               logprob="logprob_gold" in self.cfg.metrics)
            blob = {"arm": arm, "split": self.eval_split, "dataset": dataset, "setting": setting,
                    "summary": summary.to_dict(), "records": records, "wall_s": time.perf_counter() - t0}
        blob["peak_rss_mb"] = mem.peak_mb
        atomic_write_json(path, _clean(blob))
        self.n_evaluated += 1
        log.info("%s %s %s: n=%d accuracy=%.3f", arm, dataset, setting, summary.n, summary.accuracy)
        return blob

    def units(self) -> list[tuple[str, str]]:
        """``(arm, "train")`` then ``(arm, "<data set>/<setting>")`` per owned arm, in run order."""
        return [u for a in self.arms for u in [(a, "train")] + [(a, f"{d}/{s}") for d in self.cfg.datasets
                                                                   for s in self.cfg.settings[d]]]

    # --- phases -----------------------------------------------------------------------------
    def plan(self) -> dict[str, Any]:
        """The units, what is done, and what each arm still needs (no model, no data loaded)."""
        needed = [s for a in self.arms for s in sets_needed(self.cfg.arm_specs[a])]
        status = mining_status(self.cfg, self.mining, needed)
        problems = {(s, d): f"{st.path}: mined with {', '.join(bad)}" for s, by in status.items()
                    for d, st in by.items() if st.state == "complete"
                    and (bad := folder_mismatches(self.cfg, st.path, s))}
        shown = {s: {d: problems.get((s, d), st.describe() + (", mined as declared" if st.state == "complete" else ""))
                     for d, st in by.items()} for s, by in status.items()}
        arms = {}
        for a in self.arms:
            arm, tcfg = self.cfg.arm_specs[a], self.cfg.train_config(a)
            rec = read_record(self.out / "train" / a)
            evals = [f"{d}/{s}" for d in self.cfg.datasets for s in self.cfg.settings[d]]
            steps = optimizer_steps(tcfg)
            arms[a] = {"method": tcfg.method, "sets": arm_sets_key(arm), "train_distractors": arm.train_distractors,
                       "optimizer_steps": steps, "items_read": steps * tcfg.batch_size * tcfg.grad_accum,
                       "trained": bool(rec.get("complete")) and all((self.out / "train" / a / o).exists()
                                                                       for o in TRAIN_OUTPUTS),
                       "evaluated": sum(self.eval_path(a, *e.split("/", 1)).exists() for e in evals),
                       "eval_units": len(evals),
                       "needs": [shown[s][d] for s in sets_needed(arm) for d, st in status[s].items()
                                 if st.state != "complete" or (s, d) in problems]}
        ready = [a for a in self.arms if not arms[a]["needs"]]
        return {"out": str(self.out), "mining": str(self.mining),
                "mining_folders": shown,
                "questions": {"train_per_dataset": self.cfg.train_limit, "dev_per_dataset": self.cfg.dev_limit,
                              "datasets": list(self.cfg.datasets)},
                "settings": {d: list(v) for d, v in self.cfg.settings.items()},
                "arms": arms, "ready": ready, "waiting_for_mining": [a for a in self.arms if a not in ready],
                "mine_command": MINE_COMMAND}

    def run(self) -> dict[str, Any]:
        """Every owned arm's units (module docstring), then the report."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.protocol()
        require_mining(self.cfg, self.mining, [s for a in self.arms for s in sets_needed(self.cfg.arm_specs[a])])
        for a in self.arms:
            self.train_unit(a)
            for d in self.cfg.datasets:
                for s in self.cfg.settings[d]:
                    self.eval_unit(a, d, s)
            self.write_report()
        return self.write_report()

    def write_report(self) -> dict[str, Any]:
        """``report.json``, ``report.md`` and (once the rule can be applied) ``chosen.json``."""
        from neurorit_lens.experiments.study_report import write_report

        return write_report(self.cfg, self.out)


def study(config: str | os.PathLike, out: str | os.PathLike, *, mining: str | os.PathLike = DEFAULT_MINING,
          plan: bool = False, report: bool = False, arms: list[str] | None = None, device: str | None = None,
          train_limit: int | None = None, dev_limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """``neurorit study``: check the configuration and the folder, then plan, report or run.

    ``train_limit`` / ``dev_limit``: fewer questions per data set (smoke runs; recorded in
    ``protocol.json``, so such a folder is never mixed with a full run). The confirmatory run:
    :func:`neurorit_lens.experiments.confirmatory.confirm`.
    """
    cfg = load_study_config(config)
    if train_limit is not None or dev_limit is not None:
        cfg = cfg.with_limits(train_limit, dev_limit)
    return execute(Study(cfg, out, mining, device=device, arms=arms, progress=progress), plan=plan, report=report)


def execute(s: Study, plan: bool = False, report: bool = False) -> dict[str, Any]:
    """Plan (loading nothing), report (from the finished units) or run ``s`` in its folder."""
    out = s.out
    if plan:
        if (out / "protocol.json").exists():
            s.protocol(write=False)  # refuses what a run would refuse
        return s.plan()
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.FileHandler(out / "study.log"), logging.StreamHandler()], force=True)
    if report:
        s.protocol(write=False)
        return s.write_report()
    return s.run()
