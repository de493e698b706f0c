"""Execute notebooks/*.ipynb on the tiny model (NEURORIT_NB_MODEL=tiny), as nbmake would.

The committed notebooks carry outputs from the real model (SmolLM2), so a reader of the
repository sees the figures and tables. Here each notebook is read, its outputs are dropped
in memory, and it is executed on the tiny model; the committed file is never rewritten.
Part of the default suite (``make test``, so CI executes the notebooks): the three take about
1-3 CPU-minutes together. Equivalent: ``NEURORIT_NB_MODEL=tiny python -m pytest --nbmake notebooks``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
MAX_BYTES = 2_300_000  # about 2 MB each: large views are linked, not embedded


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("NEURORIT_NB_MODEL", "tiny")
    monkeypatch.setenv("NEURORIT_NB_OUT", str(tmp_path))
    before = path.read_bytes()
    assert len(before) < MAX_BYTES, f"{path.name}: {len(before) / 1e6:.1f} MB; link large views instead"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(Path.cwd())}})
    client.execute()  # the kernel inherits os.environ (monkeypatched above)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    assert path.read_bytes() == before, f"{path.name} was rewritten by the test"


WITH_OUTPUTS = ("01_explore_neurons", "02_causal_ablation", "03_robust_tuning")


@pytest.mark.parametrize("name", WITH_OUTPUTS)
def test_committed_notebooks_show_outputs(name):
    """The committed copies were run on the real model, so a reader sees results without running them."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOKS[0].parent / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert sum(bool(c.get("outputs")) for c in code) >= len(code) // 2, f"{name}: no outputs committed"
    first = "".join(str(o) for o in code[0].outputs)
    assert "smollm2" in first and "tiny" not in first, f"{name}: outputs not from the real model"
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), f"{name}: no figure"
