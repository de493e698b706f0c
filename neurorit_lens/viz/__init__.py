"""Views, plots and the run report, all self-contained HTML or PNG (no CDN).

Owns circuitsvis neuron views (``views``), matplotlib figures (``plots``) and the run
report (``report``).
"""
