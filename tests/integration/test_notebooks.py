"""Execute notebooks/*.ipynb on the tiny model (NEURORIT_NB_MODEL=tiny), as nbmake would.

Part of the default suite (``make test``, so CI executes the notebooks): the three take about
1-1.5 CPU-minutes together. Equivalent: ``NEURORIT_NB_MODEL=tiny python -m pytest --nbmake notebooks``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("NEURORIT_NB_MODEL", "tiny")
    monkeypatch.setenv("NEURORIT_NB_OUT", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: outputs not stripped"
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(Path.cwd())}})
    client.execute()  # the kernel inherits os.environ (monkeypatched above)
