"""The whole pipeline from one :class:`RunConfig`: eval -> mine -> ablate -> train -> eval -> report.

Every stage writes its own sub-folder of the run folder and is skipped when its output
already exists, so a run that crashed or was killed picks up where it stopped:

    out/config.json, environment.json
    out/eval_before/eval.json         base model on the test split, every noise setting
    out/mining/neurons.json           R, I, R_excl, I_excl, shared (+ raw scores)
    out/ablation/ablation.json        causal test of the sets against random controls
    out/train/<method>/model/         tuned model (deactivation baked in), train.json
    out/eval_after/<method>/eval.json tuned model on the same test questions
    out/report.html, report.md

Questions are split train/dev/test by question once (seeded); mining and tuning see only
train, the causal test dev, evaluation test.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, get_args

from neurorit_lens.config import RunConfig, Stage
from neurorit_lens.io import atomic_write_json, read_json, write_run_metadata

log = logging.getLogger(__name__)


def _limit(xs: list, n: int | None) -> list:
    return xs if n is None else xs[:n]


class Runner:
    """Run the pipeline stages named in ``cfg.stages`` into ``cfg.out``.

    Args:
        cfg: the run configuration (saved as ``out/config.json``).
        model: an already loaded model (else ``load_model(cfg.model)``).
    """

    def __init__(self, cfg: RunConfig, model: Any = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self._model = model
        self._splits: dict[str, list] | None = None
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

    # --- stages --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        cfg_path = self.out / "config.json"
        if cfg_path.exists():
            prev = read_json(cfg_path)
            if prev != self.cfg.to_dict():
                log.warning("%s exists with a different config; stages already done are kept, "
                            "use a new --out to rerun them", cfg_path)
        self.cfg.save(cfg_path)
        write_run_metadata(self.out, self.cfg.seed, model=self.cfg.model)
        for stage in get_args(Stage):
            if stage in self.cfg.stages:
                t0 = time.perf_counter()
                getattr(self, f"stage_{stage}")()
                self.timings[stage] = time.perf_counter() - t0
        summary = {"out": str(self.out), "timings_s": self.timings}
        atomic_write_json(self.out / "run.json", summary)
        return summary

    def _evaluate(self, model, out_dir: Path, name: str) -> None:
        from neurorit_lens.evaluation.evaluate import evaluate

        if (out_dir / "eval.json").exists():
            log.info("skip: %s exists", out_dir / "eval.json")
            return
        test = _limit(self.splits["test"], self.cfg.eval_limit)
        res = evaluate(model, test, self.cfg.eval, self.cfg.data, model_name=name, data_name=self.cfg.data.data)
        res.save(out_dir)
        print(res.table())

    def stage_eval(self) -> None:
        self._evaluate(self.model, self.out / "eval_before", self.cfg.model)

    def stage_mine(self) -> None:
        from neurorit_lens.neurons.mining import mine

        out = self.out / "mining"
        if (out / "neurons.json").exists():
            log.info("skip: %s exists", out / "neurons.json")
            return
        train = _limit(self.splits["train"], self.cfg.mine_limit)
        res = mine(self.model, train, self.cfg.mining, self.cfg.data, out_dir=str(out))
        res.save(out)

    def _neuron_sets(self):
        from neurorit_lens.neurons.sets import load_neuron_sets

        path = self.out / "mining" / "neurons.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: run the 'mine' stage first")
        return load_neuron_sets(path, self.model), (read_json(path).get("meta") or {})

    def stage_ablate(self) -> None:
        from neurorit_lens.ablation.measure import run_ablation

        out = self.out / "ablation"
        if (out / "ablation.json").exists():
            log.info("skip: %s exists", out / "ablation.json")
            return
        sets, _ = self._neuron_sets()
        dev = _limit(self.splits["dev"], self.cfg.ablate_limit)
        res = run_ablation(self.model, dev, sets, self.cfg.ablation, self.cfg.data)
        res.save(out)
        print(res.table())

    def stage_train(self) -> None:
        from neurorit_lens.training.trainer import train

        sets, meta = self._neuron_sets()
        for method in self.cfg.methods:
            tdir = self.out / "train" / method
            if not (tdir / "train.json").exists():
                tcfg = self.cfg.train.replace(method=method)
                model = copy.deepcopy(self.model)
                train(model, _limit(self.splits["train"], self.cfg.train_limit), self.splits["dev"], sets,
                      meta.get("layer_mass"), tcfg, self.cfg.data, str(tdir))
            from neurorit_lens.models import load_model

            tuned = load_model(str(tdir / "model"), device=self.cfg.device)
            self._evaluate(tuned, self.out / "eval_after" / method, f"{self.cfg.model}+{method}")
            del tuned

    def stage_report(self) -> None:
        from neurorit_lens.viz.report import write_report

        html, md = write_report(self.out, model=self.model, examples=self.splits["dev"], n_views=2)
        log.info("report: %s", html)


def run(cfg: RunConfig, model: Any = None) -> dict[str, Any]:
    """Run the pipeline; see :class:`Runner`."""
    return Runner(cfg, model).run()
