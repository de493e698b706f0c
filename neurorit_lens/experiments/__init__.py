"""Experiments built on the pipeline: the declared, paired, resumable method comparison.

``neurorit compare CONFIG --out DIR`` runs it (:mod:`neurorit_lens.experiments.harness`):
the configuration and its checks (``protocol``), the TrainConfig variants chosen on dev
(``grid``), the prompted baseline and cross-data-set tests (``extras``), units reused from
earlier run folders (``reuse``), the paired statistics (``comparison``) and the tables
(``report``).
"""
