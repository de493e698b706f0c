"""The README's API tour runs (on the tiny model and the embedded set, in a temp dir)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_api_tour_runs(tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"## API tour\s+```python\n(.*?)```", text, re.S).group(1)
    code = (block.replace("load_model()", 'load_model("tiny")')
            .replace('"../shared/data/rgb/en_fact.json"', '"embedded:60"')
            .replace("steps=24", "steps=2"))
    assert code != block
    monkeypatch.chdir(tmp_path)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        torch.set_num_threads(n)
    assert (tmp_path / "runs" / "m" / "neurons.json").exists()
    assert (tmp_path / "runs" / "t" / "model" / "neurorit_model.json").exists()
    assert (tmp_path / "view.html").exists()
