"""The ablation result: effects with bootstrap intervals, the table and plain-language verdicts.

Each :class:`SetEffect` row is one neuron set, in one context condition, on one metric:
its own effect (ablated - unablated, per example), the mean effect of its random controls,
and the paired difference ``effect - random`` with a bootstrap interval
(:mod:`neurorit_lens.statistics`). :class:`AblationResult` collects the rows and
is saved as ``ablation.json``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurorit_lens.io import atomic_write_json, read_json
from neurorit_lens.statistics import bootstrap_ci, paired_bootstrap_ci

METRICS = ("logprob", "accuracy")
CI_LEVEL = 0.95  # coverage of every interval in the result (alpha = 1 - CI_LEVEL)
RESULT_FILE = "ablation.json"


@dataclass
class Effect:
    """Mean of per-example values with a bootstrap interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray, n_bootstrap: int, seed: int) -> Effect:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return cls.empty()
        lo, hi = bootstrap_ci(x, n=n_bootstrap, seed=seed, alpha=1 - CI_LEVEL)
        return cls(float(x.mean()), lo, hi, int(x.size))

    @classmethod
    def paired(cls, a: np.ndarray, b: np.ndarray, n_bootstrap: int, seed: int) -> Effect:
        """Mean of ``a - b`` over paired examples with its paired bootstrap interval."""
        if np.asarray(a).size == 0:
            return cls.empty()
        mean, (lo, hi) = paired_bootstrap_ci(a, b, n=n_bootstrap, seed=seed, alpha=1 - CI_LEVEL)
        return cls(mean, lo, hi, int(np.asarray(a).size))

    @classmethod
    def empty(cls) -> Effect:
        """No values: NaN mean and interval, ``n = 0``."""
        return cls(float("nan"), float("nan"), float("nan"), 0)

    def excludes_zero(self) -> bool:
        return self.n > 0 and (self.ci_low > 0 or self.ci_high < 0)

    def fmt(self, digits: int = 2, scale: float = 1.0) -> str:
        if self.n == 0:
            return "n/a"
        m, lo, hi = self.mean * scale, self.ci_low * scale, self.ci_high * scale
        return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


@dataclass
class SetEffect:
    """One row: a neuron set ablated, in one context condition, on one metric.

    ``effect`` is (ablated - unablated) per example; ``random`` the same for the random
    controls (per example, averaged over seeds); ``diff`` the paired ``effect - random``.
    """

    set_name: str
    context: str  # "relevant" | "noisy"
    setting: str  # the data setting, e.g. "gold", "noise=0.8"
    metric: str  # "logprob" | "accuracy"
    n_neurons: int
    n: int
    base: float  # unablated mean (log-prob in nats, or accuracy in [0, 1])
    effect: Effect
    random: Effect
    diff: Effect
    random_seed_means: list[float] = field(default_factory=list)
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (NaN, e.g. for an empty set, becomes ``None`` so the JSON stays standard)."""
        return _nan_to_none(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SetEffect:
        d = dict(d)
        for k in ("effect", "random", "diff"):
            d[k] = Effect(**{f: (float("nan") if v is None and f != "n" else v) for f, v in d[k].items()})
        if d.get("base") is None:
            d["base"] = float("nan")
        return cls(**d)


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


_CONTEXT_WORDS = {"relevant": "relevant-only contexts", "noisy": "noisy contexts"}


def verdict_of(row: SetEffect) -> str:
    ctx = _CONTEXT_WORDS.get(row.context, f"{row.context} contexts")
    what = "gold log-prob" if row.metric == "logprob" else "accuracy"
    if row.n == 0 or row.n_neurons == 0:
        return f"{row.set_name}: no {'neurons' if row.n_neurons == 0 else 'examples'}, nothing measured under {ctx}"
    d = row.diff
    neurons = f"{row.n_neurons} neuron{'s' if row.n_neurons != 1 else ''}"
    if (row.metric == "accuracy" and row.effect.ci_low == row.effect.ci_high == 0
            and row.random.ci_low == row.random.ci_high == 0):
        return (f"{row.set_name} ablation changed no correct/incorrect outcome under {ctx}, and neither did "
                f"the random controls (n={row.n}, {neurons})")
    if row.metric == "logprob":
        amount = f"{abs(d.mean):.3f} nats"
        ci = f"95% CI of the difference [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
    else:
        amount = f"{abs(d.mean) * 100:.1f} points"
        ci = f"95% CI [{d.ci_low * 100:+.1f}, {d.ci_high * 100:+.1f}] points"
    own = f"own effect {row.effect.fmt(3 if row.metric == 'logprob' else 1, 1 if row.metric == 'logprob' else 100)}"
    if d.excludes_zero():
        direction = "lowers" if d.mean < 0 else "raises"
        return (f"{row.set_name} ablation {direction} {what} under {ctx} by {amount} more than random "
                f"neurons of the same per-layer counts ({ci}; {own}; n={row.n}, {neurons})")
    return (f"{row.set_name} ablation is not distinguishable from random controls on {what} under {ctx} "
            f"(difference {d.mean * (1 if row.metric == 'logprob' else 100):+.3f}"
            f"{'' if row.metric == 'logprob' else ' points'}, "
            f"{ci} includes 0; {own}; n={row.n}, {neurons})")


@dataclass
class AblationResult:
    """Effects of ablating neuron sets, vs random controls, per context and metric."""

    rows: list[SetEffect]
    config: dict[str, Any]
    contexts: dict[str, dict[str, Any]]
    sets: dict[str, dict[str, Any]]
    per_example: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, set_name: str, context: str, metric: str = "logprob") -> SetEffect:
        for r in self.rows:
            if (r.set_name, r.context, r.metric) == (set_name, context, metric):
                return r
        raise KeyError(f"no result for set {set_name!r}, context {context!r}, metric {metric!r}")

    def top(self, k: int = 5, metric: str = "logprob") -> list[SetEffect]:
        """The ``k`` rows of ``metric`` with the largest |difference vs random|."""
        rows = [r for r in self.rows if r.metric == metric and r.diff.n > 0]
        return sorted(rows, key=lambda r: -abs(r.diff.mean))[:k]

    def verdicts(self) -> list[str]:
        return [r.verdict for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "contexts": self.contexts, "sets": self.sets,
                "rows": [r.to_dict() for r in self.rows], "verdicts": self.verdicts(),
                "meta": self.meta, "per_example": self.per_example}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AblationResult:
        try:
            return cls(rows=[SetEffect.from_dict(r) for r in d["rows"]], config=dict(d["config"]),
                       contexts=dict(d["contexts"]), sets=dict(d["sets"]),
                       per_example=dict(d.get("per_example", {})), meta=dict(d.get("meta", {})))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an ablation result: {e}") from e

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``out_dir/ablation.json`` atomically; returns its path."""
        return atomic_write_json(Path(out_dir) / RESULT_FILE, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> AblationResult:
        """Read ``ablation.json`` (or the folder that holds it)."""
        p = Path(path)
        if p.is_dir():
            p = p / RESULT_FILE
        return cls.from_dict(read_json(p))

    def table(self) -> str:
        """A Markdown table: effect of each set vs random controls, per context and metric."""
        mode = self.config.get("mode", "zero")
        n_random = self.config.get("n_random", "?")
        lines = [
            f"Ablation ({mode}) vs {n_random} random sets with the same per-layer counts; "
            "effect = ablated - unablated, mean [bootstrap 95% CI] over examples.",
            "",
            "| set | neurons | context | metric | n | unablated | set effect | random effect | set - random |",
            "|---|---:|---|---|---:|---:|---|---|---|",
        ]
        for r in self.rows:
            if r.metric == "logprob":
                base, scale, dig, unit = f"{r.base:.3f}", 1.0, 3, "log-prob (nats)"
            else:
                base, scale, dig, unit = f"{r.base * 100:.1f}%", 100.0, 1, "accuracy (points)"
            lines.append(f"| {r.set_name} | {r.n_neurons} | {r.context} ({r.setting}) | {unit} | {r.n} | {base} | "
                         f"{r.effect.fmt(dig, scale)} | {r.random.fmt(dig, scale)} | {r.diff.fmt(dig, scale)} |")
        lines.append("")
        lines += [f"- {v}" for v in self.verdicts()]
        return "\n".join(lines)
