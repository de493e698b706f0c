"""Neuron pages, views, plots and the run report, all self-contained HTML or PNG (no CDN).

Owns the offline circuitsvis panels and pages (``panels``), per-example neuron views
(``views``), one page per neuron and the sets' index (``neuron_page``, ``neuron_data``,
``neuron_index``), matplotlib figures (``plots``) and the run report (``report``,
``report_run``, ``report_sections``).
"""
