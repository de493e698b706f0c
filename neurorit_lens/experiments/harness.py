"""The powered, paired comparison of training methods, resumable.

    neurorit compare benchmarks/configs/cpu_small.json --out runs/compare/cpu_small

One configuration (JSON or TOML; :mod:`neurorit_lens.experiments.config`) fixes everything
before the run: model,
data sets (split train/dev/test by question with
:func:`neurorit_lens.data.splits.load_splits`, distractors mined within each split),
settings, methods, seeds, the learning-rate grid per method, the LR selection rule, and
the declared contrasts. The harness writes ``protocol.json`` before any unit runs and refuses
to continue in that folder with a changed configuration.

Units resume by the runner's rule (:mod:`neurorit_lens.stages`): each unit folder
(``mining/``, ``train/<run>/``, ``eval/<run>/``) records in ``stage.json`` the fingerprint of
the configuration first declared in ``protocol.json``; a finished unit is skipped, an
unfinished training resumes from its checkpoints, so a kill loses at most the unit in
progress. Folders written before these records (no ``stage.json``) are taken as they are;
a folder recorded under another protocol is refused. Evaluation units are files under
``eval/<run>/``, each written atomically: one is done when its file exists. Dev choices are
``selection/<method>.json``, made once.

Phases:

1. mine neurons on the pooled training questions (methods that need neuron sets);
2. base model (``base``, untuned): test evaluation;
3. for every trained method, at the first seed: train one run per LR of its grid (same
   optimizer steps and schedule for every method; with a ``train_grid``, one per LR and
   TrainConfig variant, :mod:`neurorit_lens.experiments.grid`), evaluate each on the dev questions at
   the selection settings, choose by the declared rule (highest pooled dev accuracy;
   ties: the smaller LR, then the first declared variant), evaluate the chosen run only on
   the test questions (a one-candidate grid without extra seeds has nothing to choose: no
   dev pass);
4. extra seeds (``extra_seeds``) for neurorit and the strongest baseline (the trained
   non-neurorit method with the highest dev score at its chosen LR), at the LR chosen at
   the first seed;
5. settings added by amendment: test evaluations of every run of the report (no training,
   no dev pass; :mod:`neurorit_lens.experiments.extras`);
6. ``results.json`` and ``results.md`` (:mod:`neurorit_lens.experiments.report`).

``"dev_only": true`` stops after the dev choices (base evaluated on dev as a reference): a
selection run that evaluates no test question (:mod:`neurorit_lens.experiments.grid`).

Optional (:mod:`neurorit_lens.experiments.extras`): the ``prompted`` format-control baseline (the
untuned model with a prompt and generation length chosen on dev from ``prompted_variants``,
after the base model), and ``cross_test`` sets (test-only data sets, evaluated last with
each method's first-seed run; reported in their own tables). ``--amend`` adds these, and
evaluation settings, to an existing run folder without redoing anything
(:mod:`neurorit_lens.experiments.protocol`), e.g.
``neurorit compare benchmarks/configs/cpu_main_amend.json --out runs/compare/cpu_main --amend``.

Workers: ``--methods clean,layers`` on one process (or machine) and ``--methods full,neurorit``
on another share one run folder; each does its methods' units only and ends by writing the
report of what is finished. ``base`` and ``prompted`` are methods like the others. The neuron
mining is done by the first worker whose method needs it (give ``random`` and ``neurorit`` to
one worker, or two would mine at once). The extra seeds wait until every method's dev choice
is on disk: run a worker again, or run without ``--methods``, once the others are done.

Every test evaluation stores per-question records (prediction, extracted answer, 0/1
accuracy, EM, F1, copy flag, teacher-forced log p(gold)) for the paired statistics.
``--plan`` prints the units and their size without loading a model.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neurorit_lens.config import DataConfig, EvalConfig, MiningConfig, TrainConfig
from neurorit_lens.experiments.config import CompareConfig
from neurorit_lens.experiments.extras import PROMPTED, ExtrasMixin, prompted_run
from neurorit_lens.experiments.grid import (
    GridMixin,
    candidate_key,
    candidates,
    choose,
    overrides,
    variant_named,
)
from neurorit_lens.experiments.protocol import (
    RULE,
    amended_parts,
    check_protocol,
    chosen_run,
    load_config,
    run_name,
    shared_data,
    trained,
)
from neurorit_lens.experiments.results import ResultsMixin, _clean, record_peak, schedule_mass  # noqa: F401
from neurorit_lens.experiments.reuse import ReuseMixin
from neurorit_lens.io import atomic_write_json, environment_info, fingerprint, read_json
from neurorit_lens.memory import PeakRSS
from neurorit_lens.stages import open_stage, run_stage

log = logging.getLogger("neurorit_lens.experiments")
NEEDS_NEURONS = ("neurorit", "layers", "random", "stage1")


class Harness(ExtrasMixin, GridMixin, ReuseMixin, ResultsMixin):
    """One comparison run in ``out`` (see module docstring)."""

    def __init__(self, cfg: dict[str, Any] | CompareConfig, out: str | os.PathLike, device: str | None = None,
                 progress: bool = True, results: str | os.PathLike | None = None, amend: bool = False,
                 reuse: list[str | os.PathLike] | None = None, methods: list[str] | None = None):
        cfg = cfg.declared if isinstance(cfg, CompareConfig) else cfg  # the dict protocol.json records
        self.cfg, self.out, self.progress, self.amend = cfg, Path(out), progress, amend
        if methods is not None:
            unknown = [m for m in methods if m not in cfg["methods"]]
            if unknown or not methods:
                raise ValueError(f"--methods {','.join(methods)!r}: each must be one of the configuration's "
                                 f"methods {cfg['methods']}")
        self.only = None if methods is None else set(methods)  # worker mode: these methods' units only
        self.reuse_from = [Path(p) for p in reuse or []]  # earlier run folders (neurorit_lens.experiments.reuse)
        self.first_cfg: dict[str, Any] = cfg  # the configuration first declared (load_data reads protocol.json)
        self.amended: dict[str, list[str]] = {}
        self.skipped: dict[str, dict[str, dict[str, int]]] = {}
        self.cross, self.cross_cfgs, self.cross_settings, self.cross_skipped = {}, {}, {}, {}
        self.exploratory: tuple[list[list[str]], list[str]] = ([], [])  # added by amendment
        self.amendments: list[dict[str, Any]] = []
        self.results = Path(results) if results is not None else None  # a second copy of results.json/md
        self.device = device or cfg.get("device", "cpu")
        self.examples: dict[str, dict[str, list]] = {}
        self.data_cfgs: dict[str, DataConfig] = {}
        self._base = None
        self._loaded: tuple[str, Any] | None = None
        self._open_evals: set[str] = set()  # eval/<run> folders checked by this process
        self.n_trained = 0  # training runs this process actually ran (not skipped)

    # --- setup ------------------------------------------------------------------------------
    def data_cfg(self, spec: dict[str, Any]) -> DataConfig:
        c = self.cfg
        data = spec["data"].replace("{shared}", str(shared_data()))
        return DataConfig(data=data, format=spec.get("format", "auto"), split="all",
                          split_fractions=tuple(c.get("split_fractions", (0.6, 0.2, 0.2))),
                          seed=c.get("data_seed", 0), n_passages=c.get("n_passages", 5),
                          template=c.get("template", "auto"), max_prompt_tokens=c.get("max_prompt_tokens", 512),
                          n_distractors=c.get("n_distractors", 10))

    def load_data(self) -> None:
        """Each data set split by question, distractors within splits, first N per split."""
        from neurorit_lens.data.splits import load_splits

        lim = {"train": self.cfg.get("train_limit"), "dev": self.cfg.get("dev_limit"),
               "test": self.cfg.get("test_limit")}
        proto = self.out / "protocol.json"
        self.first_cfg = read_json(proto)["config"] if proto.exists() else self.cfg
        for name, spec in self.cfg["datasets"].items():
            dcfg = self.data_cfg(spec)
            if not dcfg.data.startswith(("embedded", "hf:")) and not Path(dcfg.data).exists():
                raise FileNotFoundError(f"data set {name!r}: {dcfg.data} not found (set NEURORIT_SHARED_DATA)")
            _, splits = load_splits(dcfg)
            self.data_cfgs[name] = dcfg
            self.examples[name] = {k: v[: lim[k]] if lim[k] else v for k, v in splits.items()}
            log.info("%s: %s questions (train/dev/test)", name, {k: len(v) for k, v in self.examples[name].items()})
        self.load_amended_settings()
        self.load_cross()

    def pool(self, split: str) -> list:
        exs = [ex for name in self.examples for ex in self.examples[name][split]]
        random.Random(f"pool:{split}:{self.cfg.get('data_seed', 0)}").shuffle(exs)
        return exs

    def settings_of(self, dataset: str) -> list[str]:
        """The settings first declared for ``dataset``, then those added by amendment it can build."""
        return self.declared_of(dataset) + self.amended.get(dataset, [])

    def protocol(self, write: bool = True) -> dict[str, Any]:
        """Write ``protocol.json`` once; refuse a changed configuration afterwards unless it is
        an amendment allowed by ``--amend`` (:func:`neurorit_lens.experiments.protocol.check_protocol`)."""
        proto = check_protocol(self.out / "protocol.json", self.cfg, self.amend,
                               lambda: environment_info(self.cfg["seeds"][0]), write=write)
        self.exploratory = amended_parts(proto) if "amendments" in proto else ([], [])
        self.amendments = [{"at": a["at"], "added": a["added"]} for a in proto.get("amendments", [])]
        return proto

    @property
    def base(self):
        if self._base is None:
            from neurorit_lens.models import load_model

            self._base = load_model(self.cfg["model"], device=self.device)
        return self._base

    def neurons(self):
        """The mining output (sets, meta, layer mass, answer means), mined once on the pooled training questions."""
        from neurorit_lens.neurons.output import MiningOutput

        mdir = self.out / "mining"
        self.run_unit(mdir, "mining", ["neurons.json"], lambda: self.reuse_mining(mdir) or self._mine(mdir))
        return MiningOutput.load(mdir, self.base)

    def _mine(self, mdir: Path) -> None:
        from neurorit_lens.neurons.mining import mine

        exs = self.pool("train")[: self.cfg.get("mine_limit") or None]
        res = mine(self.base, exs, MiningConfig.from_dict(self.cfg.get("mining", {})), self.mix_cfg(), out_dir=mdir,
                   show_progress=self.progress)
        res.save(mdir)

    # --- resumable units (neurorit_lens.stages, the runner's rule) ---------------------------
    def declared_fingerprint(self) -> str:
        """Fingerprint of the configuration first declared in ``protocol.json``: every unit's input.

        Raises:
            RuntimeError: no ``protocol.json`` yet (it is written before any unit runs).
        """
        proto = self.out / "protocol.json"
        if not proto.exists():
            raise RuntimeError(f"{proto}: the protocol is written before any unit runs (Harness.protocol())")
        return fingerprint(read_json(proto)["config"])

    def unit_inputs(self, rel: str) -> dict[str, str]:
        return {"protocol": self.declared_fingerprint(), "unit": rel}

    def run_unit(self, folder: Path, rel: str, outputs: list[str], fn: Callable[[], Any]) -> bool:
        """One unit folder through :func:`neurorit_lens.stages.run_stage`; a folder without a record
        (written before records existed) is adopted, one of another protocol is refused."""
        return run_stage(folder, self.unit_inputs(rel), outputs, fn, name=rel, unrecorded="adopt", stale="refuse")

    def mix_cfg(self) -> DataConfig:
        return self.data_cfgs[next(iter(self.data_cfgs))]

    # --- units ------------------------------------------------------------------------------
    def train_config(self, method: str, lr: float, seed: int, variant: dict[str, Any] | None = None) -> TrainConfig:
        """The TrainConfig of one (method, LR, train_grid variant, seed) run."""
        return TrainConfig.from_dict({**self.cfg["train"], **overrides(variant), "method": method, "lr": lr,
                                      "lr_grid": [], "seed": seed})

    def train_unit(self, method: str, lr: float, seed: int, variant: dict[str, Any] | None = None) -> Path:
        """Train one (method, LR, train_grid variant, seed) run unless its ``train.json`` and model exist."""
        name = run_name(method, lr, seed, variant and variant["name"])
        d = self.out / "train" / name
        self.run_unit(d, f"train/{name}", ["train.json", "model/neurorit_model.json"],
                      lambda: self._train(name, d, method, lr, seed, variant))
        return d

    def _train(self, name: str, d: Path, method: str, lr: float, seed: int, variant: dict[str, Any] | None) -> None:
        from neurorit_lens.training.inputs import prepare_training
        from neurorit_lens.training.methods import train

        tcfg = self.train_config(method, lr, seed, variant)
        if self.reuse_train(name, tcfg):
            return
        inputs = prepare_training(self.neurons() if method in NEEDS_NEURONS else None, tcfg)
        log.info("training %s", name)
        import torch

        torch.manual_seed(seed)
        self._loaded = None  # the last evaluated model (and its generation twin) is not needed while training
        model = copy.deepcopy(self.base)
        with PeakRSS() as mem:
            train(model, self.pool("train"), None, inputs.sets, inputs.layer_mass, tcfg, self.mix_cfg(), d,
                  resume=True, base_model=self.cfg["model"], progress=self.progress,
                  deactivation_values=inputs.deactivation_values)
        record_peak(d / "train.json", mem.peak_mb)
        if not self.cfg.get("keep_checkpoints", False):
            shutil.rmtree(d / "runs", ignore_errors=True)
        self.n_trained += 1
        del model  # evaluation reloads the saved model, as a resumed run does

    def model_of(self, run: str):
        if run == "base" or run.startswith(PROMPTED + "/"):
            return self.base
        if self._loaded is None or self._loaded[0] != run:
            from neurorit_lens.models import load_model

            self._loaded = None  # free the previous model first
            self._loaded = (run, load_model(str(self.out / "train" / run / "model"), device=self.device))
        return self._loaded[1]

    def eval_path(self, run: str, split: str, dataset: str, setting: str) -> Path:
        return self.out / "eval" / run / split / dataset / f"{setting}.json"

    def eval_unit(self, run: str, split: str, dataset: str, setting: str) -> dict[str, Any]:
        """Greedy answers, scores and teacher-forced log p(gold) of one run on one data set,
        split and setting, per question; skipped when its file exists, copied when ``--reuse``
        has it or when it is base's (a prompted variant without overrides)."""
        if run not in self._open_evals:
            open_stage(self.out / "eval" / run, self.unit_inputs(f"eval/{run}"), name=f"eval/{run}",
                       unrecorded="adopt", stale="refuse")
            self._open_evals.add(run)
        path = self.eval_path(run, split, dataset, setting)
        if path.exists():
            return read_json(path)
        if (reused := self.reuse_eval(run, split, dataset, setting)) is not None:
            return reused
        if (same := self.same_as_base(run, split, dataset, setting)) is not None:
            return same
        return self.evaluate(run, split, dataset, setting)

    def evaluate(self, run: str, split: str, dataset: str, setting: str) -> dict[str, Any]:
        """One evaluation unit computed and written (``eval_unit`` without its shortcuts)."""
        from neurorit_lens.experiments.scoring import score_questions

        path = self.eval_path(run, split, dataset, setting)
        with PeakRSS() as mem:
            model, t0 = self.model_of(run), time.perf_counter()
            if split == "cross":
                exs, dcfg = self.cross[dataset], self.cross_cfgs[dataset]
            else:
                exs, dcfg = self.examples[dataset][split], self.data_cfgs[dataset]
            dcfg, ecfg_d = self.variant_inputs(run, dcfg, self.cfg.get("eval", {}))
            ecfg = EvalConfig.from_dict({**ecfg_d, "settings": [setting]})
            records, summary = score_questions(model, exs, setting, ecfg, dcfg, dataset, self.cfg.get("logprob", True))
            blob = {"run": run, "split": split, "dataset": dataset, "setting": setting, "summary": summary.to_dict(),
                    "records": records, "wall_s": time.perf_counter() - t0}
        blob["peak_rss_mb"] = mem.peak_mb
        atomic_write_json(path, _clean(blob))
        log.info("%s %s %s %s: n=%d accuracy=%.3f", run, split, dataset, setting, summary.n, summary.accuracy)
        return blob

    # --- phases -----------------------------------------------------------------------------
    def owns(self, method: str) -> bool:
        """Whether this process does ``method``'s units (every method unless ``--methods``)."""
        return self.only is None or method in self.only

    def test_units(self, run: str) -> None:
        """Test evaluations at the declared settings (amended ones come last: ``amended_units``)."""
        for d in self.examples:
            for s in self.declared_of(d):
                self.eval_unit(run, "test", d, s)

    def dev_score(self, run: str) -> float:
        """Pooled dev accuracy of ``run`` at the selection settings (every data set)."""
        vals = [r["accuracy"] for d in self.examples for s in self.cfg["selection"]["settings"]
                for r in self.eval_unit(run, "dev", d, s)["records"]]
        return sum(vals) / len(vals)

    def select(self, method: str, seed: int, bar: Callable[[], None]) -> dict[str, Any]:
        """Train and dev-evaluate every candidate (LR, or LR x train_grid variant); the declared
        rule picks one (ties: the first candidate, i.e. the smaller LR, then the first variant)."""
        path = self.out / "selection" / f"{method}.json"
        if path.exists():
            return read_json(path)
        scores: dict[str, float] = {}
        cands = candidates(self.cfg, method)
        needs_dev = len(cands) > 1 or bool(self.cfg.get("extra_seeds") or self.cfg.get("dev_only"))
        for lr, v in cands:  # one candidate and no extra seed: nothing to choose, no dev pass
            self.train_unit(method, lr, seed, v)
            bar()
            if needs_dev:
                scores[candidate_key(lr, v)] = self.dev_score(run_name(method, lr, seed, v and v["name"]))
            bar()
        best, variant = cands[choose(cands, scores)]
        sel = {"method": method, "seed": seed, "dev_scores": scores, "chosen": candidate_key(best, variant),
               "chosen_lr": best, "rule": self.cfg["selection"].get("rule", RULE),
               "settings": self.cfg["selection"]["settings"]}
        if self.cfg.get("train_grid", {}).get(method):
            sel |= {"chosen_variant": variant["name"], "chosen_overrides": overrides(variant)}
        atomic_write_json(path, sel)
        return sel

    def strongest_baseline(self, selection: dict[str, Any]) -> str | None:
        cands = [m for m in trained(self.cfg) if m != "neurorit" and m in selection]  # never base or prompted
        if not cands:
            return None
        return max(cands, key=lambda m: (selection[m]["dev_scores"].get(selection[m]["chosen"], 0.0), -cands.index(m)))

    def plan(self) -> dict[str, Any]:
        """Units and sizes (no model loaded)."""
        n_test = sum(len(self.examples[d]["test"]) * len(self.settings_of(d)) for d in self.examples)
        n_dev = sum(len(self.examples[d]["dev"]) for d in self.examples) * len(self.cfg["selection"]["settings"])
        grid = sum(len(candidates(self.cfg, m)) for m in trained(self.cfg))
        dev_runs = sum(len(candidates(self.cfg, m)) for m in trained(self.cfg)
                       if len(candidates(self.cfg, m)) > 1 or self.cfg.get("extra_seeds") or self.cfg.get("dev_only"))
        baselines = [m for m in trained(self.cfg) if m != "neurorit"]
        extra = len(self.cfg.get("extra_seeds", [])) * (("neurorit" in self.cfg["methods"]) + bool(baselines))
        steps = self.cfg["train"].get("steps", TrainConfig().steps)
        return {"train_questions": len(self.pool("train")), "training_runs": grid + extra, "extra_runs": extra,
                "optimizer_steps": (grid + extra) * steps, "dev_generations": dev_runs * n_dev,
                "test_generations": (len(self.cfg["methods"]) + extra) * n_test,
                "teacher_forced_passes": (len(self.cfg["methods"]) + extra) * n_test if self.cfg.get("logprob", True)
                else 0, "per_dataset": {d: {k: len(v) for k, v in self.examples[d].items()} for d in self.examples},
                **self.extras_plan(), **self.amended_plan(len(self.cfg["methods"]) + extra)} | self.dev_only_plan(
            dev_runs, n_dev)

    def run(self) -> dict[str, Any]:
        """Every phase (module docstring), then the report."""
        from tqdm.auto import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        self.protocol()
        self.check_reuse()
        plan = self.plan()
        log.info("plan: %s", plan)
        seed0, methods = self.cfg["seeds"][0], [m for m in self.cfg["methods"] if self.owns(m)]
        total = ("base" in methods) + sum(2 * len(candidates(self.cfg, m)) + 1 for m in trained(self.cfg)
                                          if self.owns(m)) + \
            2 * plan["extra_runs"] + self.extra_unit_count() + (len(methods) if self.amended else 0)
        with tqdm(total=total, desc="units (train / dev / test)", unit="unit", disable=not self.progress) as pbar:
            def bar() -> None:
                pbar.update(1)

            if self.cfg.get("dev_only"):
                return self.run_dev_only(bar)

            if "base" in methods:
                self.test_units("base")
                bar()
            selection: dict[str, Any] = {}
            if PROMPTED in methods:
                selection[PROMPTED] = self.select_prompted(bar)
                self.test_units(prompted_run(selection[PROMPTED]["chosen"]))
                bar()
            for m in [m for m in trained(self.cfg) if self.owns(m)]:
                selection[m] = self.select(m, seed0, bar)
                self.test_units(chosen_run(selection[m], seed0))
                bar()
                if self.only is None:
                    self.write_report(selection)
            self.extra_seeds(selection, bar)
            if self.cross:
                self.cross_units(selection, bar)
            if self.amended:
                self.amended_units({m: r for m, r in self.runs(selection).items() if self.owns(m)}, bar)
        return self.write_report(selection) if self.only is None else self.report_so_far()

    def extra_unit_count(self) -> int:
        """Progress-bar units of the prompted variants and the cross sets."""
        n_var = len(self.cfg.get("prompted_variants", []))
        return (n_var + 1 if n_var > 1 else n_var) + (len(self.cfg["methods"]) if self.cross else 0)

    def extra_seeds(self, selection: dict[str, Any], bar: Callable[[], None]) -> None:
        if not self.cfg.get("extra_seeds"):
            return
        if self.only is not None:  # the strongest baseline needs every method's dev choice
            selection = {**self.selections_on_disk(), **selection}
            missing = [m for m in trained(self.cfg) if m not in selection]
            if missing:
                log.info("extra seeds wait for the dev choice of %s (another worker's methods)", missing)
                return
        strongest = self.strongest_baseline(selection)
        atomic_write_json(self.out / "selection" / "strongest_baseline.json", {"method": strongest})
        for seed in self.cfg.get("extra_seeds", []):
            for m in [x for x in ("neurorit", strongest) if x in selection and self.owns(x)]:
                sel = selection[m]
                self.train_unit(m, sel["chosen_lr"], seed, variant_named(self.cfg, m, sel.get("chosen_variant")))
                bar()
                self.test_units(chosen_run(sel, seed))
                bar()


def compare(config: str | os.PathLike | CompareConfig, out: str | os.PathLike, *, plan: bool = False,
            report: bool = False, amend: bool = False, reuse: list[str | os.PathLike] | None = None,
            methods: list[str] | None = None, device: str | None = None, results: str | os.PathLike | None = None,
            progress: bool = True) -> dict[str, Any]:
    """``neurorit compare``: check the configuration and the run folder, then plan, report or run.

    ``plan``: the units and sizes (JSON-ready), no model loaded and nothing written;
    ``report``: results.json/md from the units finished so far (nothing trained or evaluated);
    otherwise every unit not yet done, then the report. Returns the plan or the report.
    """
    cfg = config.declared if isinstance(config, CompareConfig) else load_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(out / "harness.log"), logging.StreamHandler()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    h = Harness(cfg, out, device, progress=progress, results=results, amend=amend, reuse=reuse, methods=methods)
    h.load_data()
    if plan:
        proto = h.protocol(write=False)  # refuses what a run would refuse
        sizes = h.plan()
        h.check_reuse()
        if h.reuse_from:
            sizes["reuse"] = h.reuse_plan()
        if proto.get("amendments") and amend:
            sizes["amendment"] = proto["amendments"][-1]["added"]
        return sizes
    if report:
        h.protocol(write=False)  # refuses what a run would refuse
        return h.report_so_far()
    return h.run()
