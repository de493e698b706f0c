"""Experiments built on the pipeline: the declared, paired, resumable method comparison.

``neurorit compare CONFIG --out DIR`` runs it (:mod:`neurorit_lens.experiments.harness`):
the configuration and its checks (``protocol``), the TrainConfig variants chosen on dev
(``grid``), the prompted baseline and cross-data-set tests (``extras``), units reused from
earlier run folders (``reuse``), the paired statistics (``comparison``) and the tables
(``report``); both score questions through ``scoring``.

``neurorit study CONFIG --out DIR`` runs the component study on dev
(:mod:`neurorit_lens.experiments.study`): its configuration (``study_config``), the arms'
sets pooled from the shared mining folders (``study_mining``), the contrasts and cost per
arm (``study_report``) and the declared rule that picks the confirmatory configuration
(``study_rule``). ``neurorit study CONFIG --confirmatory --chosen DEV/chosen.json`` runs that
configuration against the baselines on fresh questions (``confirmatory``,
``confirmatory_report``).
"""
