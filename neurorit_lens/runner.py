"""The whole pipeline from one :class:`RunConfig`: eval -> mine -> ablate -> train -> eval -> report.

Every stage writes its own sub-folder of the run folder::

    out/config.json, environment.json
    out/eval_before/eval.json         base model on the test split, every noise setting
    out/mining/neurons.json           R, I, R_excl, I_excl, shared (+ raw scores)
    out/ablation/ablation.json        causal test of the sets against random controls
    out/train/<method>/model/         tuned model (deactivation baked in), train.json
    out/eval_after/<method>/eval.json tuned model on the same test questions
                                      (<method>: each of cfg.methods, then each control)
    out/report.html, report.md

Each stage folder holds a ``stage.json`` with the fingerprint of what produced it: the
config sections the stage reads (data, model, its own section and limit) and the
fingerprints of the stages it reads from (ablation and training read mining; the tuned
evaluation reads training). A rerun skips a stage whose fingerprint matches and whose
output exists, so a run that crashed or was killed picks up where it stopped (an
unfinished training resumes from its checkpoint). A rerun with a changed config first
removes every stage folder whose fingerprint no longer matches, and the report, so the
folder never shows old outputs under the new ``config.json``; the selected stages then
rerun.

Each stage folder's ``stage.json`` also records the wall and CPU seconds its last run took,
and ``run.json`` those per stage of this invocation (a skipped stage counts its check only)
with the machine's load average at the end: on a shared machine wall time follows the
load, CPU time much less.

Questions are split train/dev/test by question once (seeded); mining and tuning see only
train, the causal test dev, evaluation test. The control methods (``cfg.controls``, by
default ``layers``) train on the same items with the same train section as ``cfg.methods``,
so the report can pair each method with each control question by question.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from neurorit_lens.config import RunConfig, Stage
from neurorit_lens.io import (
    atomic_write_json,
    fingerprint,
    read_json,
    sha256_file,
    write_run_metadata,
)
from neurorit_lens.precision import resolve_precision
from neurorit_lens.stages import STAGE_FILE, read_record, run_stage

log = logging.getLogger(__name__)

STAGE_DIRS = ("eval_before", "mining", "ablation", "train", "eval_after")  # train/eval_after: one per method
REPORT_OUTPUTS = ("report.html", "report.md", "report_files", "views")


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _limit(xs: list, n: int | None) -> list:
    return xs if n is None else xs[:n]


class Runner:
    """Run the pipeline stages named in ``cfg.stages`` into ``cfg.out``.

    Args:
        cfg: the run configuration (saved as ``out/config.json``).
        model: an already loaded model (else ``load_model(cfg.model)``).
        progress: tqdm bars in the stages.
    """

    def __init__(self, cfg: RunConfig, model: Any = None, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.out = Path(cfg.out)
        self._model = model
        self._splits: dict[str, list] | None = None
        self._base: dict[str, Any] | None = None
        self.timings: dict[str, float] = {}

    # --- shared inputs -------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            from neurorit_lens.models import load_model

            self._model = load_model(self.cfg.model, device=self.cfg.device)
        return self._model

    @property
    def splits(self) -> dict[str, list]:
        if self._splits is None:
            from neurorit_lens.data.splits import load_splits

            d = self.cfg.data
            loaded, self._splits = load_splits(d)  # distractors mined within each split
            sizes = {k: len(v) for k, v in self._splits.items()}
            log.info("data %s: %d examples (%d skipped) -> %s", d.data, len(loaded.examples), loaded.n_skipped, sizes)
            atomic_write_json(self.out / "data.json", {"source": d.data, "format": loaded.format,
                                                       "n_examples": len(loaded.examples),
                                                       "n_skipped": loaded.n_skipped,
                                                       "skipped_reasons": loaded.skipped_reasons, "splits": sizes})
        return self._splits

    # --- fingerprints ----------------------------------------------------------------
    def _base_inputs(self) -> dict[str, Any]:
        """What every stage reads: the data (config and, for a local file, its content) and the model."""
        if self._base is None:
            src = Path(self.cfg.data.data)
            self._base = {"data": self.cfg.data.to_dict(),
                          "data_file_sha256": sha256_file(src) if src.is_file() else None,
                          "model": self.cfg.model, "device": self.cfg.device}
        return self._base

    def stage_inputs(self, rel: str) -> dict[str, Any]:
        """The inputs of the stage folder ``rel`` (e.g. ``"mining"``, ``"train/neurorit"``) under this config."""
        c = self.cfg
        kind, _, method = rel.partition("/")
        if kind == "eval_before":
            own = {"eval": c.eval.to_dict(), "eval_limit": c.eval_limit}
        elif kind == "mining":
            # the precision mining will resolve to: an auto that runs fp32 keeps earlier fp32 folders current
            mcfg = c.mining.replace(precision=resolve_precision(c.mining.precision, c.mining.method, c.device))
            own = {"mining": mcfg.to_dict(), "mine_limit": c.mine_limit}
        elif kind == "ablation":
            own = {"ablation": c.ablation.to_dict(), "ablate_limit": c.ablate_limit,
                   "upstream": {"mining": self.stage_fingerprint("mining")},
                   **({"train_limit": c.train_limit} if c.ablation.mode == "gate" else {})}  # gates learn on train
        elif kind == "train" and method:
            own = {"train": c.train.replace(method=method).to_dict(), "train_limit": c.train_limit,
                   "upstream": {"mining": self.stage_fingerprint("mining")}}
        elif kind == "eval_after" and method:
            own = {"eval": c.eval.to_dict(), "eval_limit": c.eval_limit,
                   "upstream": {rel.replace("eval_after", "train"): self.stage_fingerprint(f"train/{method}")}}
        else:
            raise ValueError(f"unknown stage folder {rel!r}")
        return {**self._base_inputs(), **own}

    def stage_fingerprint(self, rel: str) -> str:
        return fingerprint(self.stage_inputs(rel))

    def _is_current(self, rel: str) -> bool:
        """Whether ``out/rel`` was produced (or started) from this config's inputs."""
        path = self.out / rel / STAGE_FILE
        if not path.exists():
            return False
        try:
            expected = self.stage_fingerprint(rel)
        except ValueError:  # e.g. train/<name> where <name> is not a method any more
            return False
        return read_record(self.out / rel).get("fingerprint") == expected

    def _existing_stage_folders(self) -> list[str]:
        found = []
        for name in STAGE_DIRS:
            d = self.out / name
            if not d.is_dir():
                continue
            if name in ("train", "eval_after"):
                found += [f"{name}/{p.name}" for p in sorted(d.iterdir()) if p.is_dir()]
            else:
                found.append(name)
        return found

    def remove_stale(self) -> list[str]:
        """Delete the stage folders (and the report) that this config's inputs no longer produce."""
        stale = [rel for rel in self._existing_stage_folders() if not self._is_current(rel)]
        if stale:
            log.warning("%s: inputs changed for %s; removing them (and the report) so they are rerun",
                        self.out, ", ".join(stale))
            for rel in stale:
                shutil.rmtree(self.out / rel)
            for name in REPORT_OUTPUTS:
                p = self.out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        return stale

    def _run_stage(self, rel: str, output: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` for the stage folder ``rel`` unless it is complete for these inputs
        (:func:`neurorit_lens.stages.run_stage`: a folder from other inputs starts clean); a stage
        that ran records its wall and CPU seconds in its ``stage.json``."""
        d = self.out / rel
        t0, c0 = time.perf_counter(), time.process_time()
        if not run_stage(d, self.stage_inputs(rel), [output], fn, name=rel):
            log.info("skip: %s is up to date", d / output)
            return
        seconds, cpu = round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)
        log.info("%s: %.1f s (%.1f s of CPU)", rel, seconds, cpu)
        atomic_write_json(d / STAGE_FILE, {**read_json(d / STAGE_FILE), "seconds": seconds, "cpu_seconds": cpu})

    # --- stages --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.remove_stale()
        self.cfg.save(self.out / "config.json")
        write_run_metadata(self.out, self.cfg.seed, model=self.cfg.model)
        cpu: dict[str, float] = {}
        for stage in get_args(Stage):
            if stage in self.cfg.stages:
                t0, c0 = time.perf_counter(), time.process_time()
                getattr(self, f"stage_{stage}")()
                self.timings[stage] = time.perf_counter() - t0
                cpu[stage] = time.process_time() - c0
        summary = {"out": str(self.out), "timings_s": self.timings, "cpu_s": cpu, "load_average": _load_average()}
        atomic_write_json(self.out / "run.json", summary)
        return summary

    def _evaluate(self, model: Any, out_dir: Path, name: str) -> None:
        from neurorit_lens.evaluation.evaluate import evaluate

        test = _limit(self.splits["test"], self.cfg.eval_limit)
        res = evaluate(model, test, self.cfg.eval, self.cfg.data, model_name=name, data_name=self.cfg.data.data,
                       show_progress=self.progress)
        res.save(out_dir)
        print(res.table())

    def stage_eval(self) -> None:
        self._run_stage("eval_before", "eval.json",
                        lambda: self._evaluate(self.model, self.out / "eval_before", self.cfg.model))

    def stage_mine(self) -> None:
        from neurorit_lens.neurons.mining import mine

        def go() -> None:
            out = self.out / "mining"
            train = _limit(self.splits["train"], self.cfg.mine_limit)
            mine(self.model, train, self.cfg.mining, self.cfg.data, out_dir=str(out),
                 show_progress=self.progress).save(out)

        self._run_stage("mining", "neurons.json", go)

    def _mining_output(self):
        from neurorit_lens.neurons.output import MiningOutput

        path = self.out / "mining" / "neurons.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: run the 'mine' stage first")
        return MiningOutput.load(path, self.model)

    def stage_ablate(self) -> None:
        from neurorit_lens.ablation.measure import run_ablation

        def go() -> None:
            sets = self._mining_output().sets
            dev = _limit(self.splits["dev"], self.cfg.ablate_limit)
            train = _limit(self.splits["train"], self.cfg.train_limit) if self.cfg.ablation.mode == "gate" else None
            res = run_ablation(self.model, dev, sets, self.cfg.ablation, self.cfg.data, show_progress=self.progress,
                               train_examples=train, gate_dir=self.out / "ablation" / "gates")
            res.save(self.out / "ablation")
            print(res.table())

        self._run_stage("ablation", "ablation.json", go)

    def _train(self, method: str) -> None:
        from neurorit_lens.training.inputs import prepare_training
        from neurorit_lens.training.methods import train

        cfg = self.cfg.train.replace(method=method)
        inputs = prepare_training(self._mining_output(), cfg)
        model = copy.deepcopy(self.model)
        train(model, _limit(self.splits["train"], self.cfg.train_limit), self.splits["dev"], inputs.sets,
              inputs.layer_mass, cfg, self.cfg.data, str(self.out / "train" / method),
              deactivation_values=inputs.deactivation_values, progress=self.progress)

    def _evaluate_tuned(self, method: str) -> None:
        from neurorit_lens.models import load_model

        tuned = load_model(str(self.out / "train" / method / "model"), device=self.cfg.device)
        self._evaluate(tuned, self.out / "eval_after" / method, f"{self.cfg.model}+{method}")

    def stage_train(self) -> None:
        for method in self.cfg.trained_methods():
            self._run_stage(f"train/{method}", "train.json", lambda m=method: self._train(m))
            self._run_stage(f"eval_after/{method}", "eval.json", lambda m=method: self._evaluate_tuned(m))

    def stage_report(self) -> None:
        from neurorit_lens.viz.report import write_report

        html, md = write_report(self.out, model=self.model, examples=self.splits["dev"], n_views=2)
        log.info("report: %s", html)


def run(cfg: RunConfig, model: Any = None, progress: bool = True) -> dict[str, Any]:
    """Run the pipeline; see :class:`Runner`."""
    return Runner(cfg, model, progress).run()
