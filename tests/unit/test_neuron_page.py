"""Neuron pages: activations against an unbatched full-cache reference, the direct logit effect
against the model's own norm and unembedding, selectivity against a hand formula, page and
index contents, CLI errors, and a headless-Chromium render (skipped without a browser, except under
CI, which installs one)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
import torch

from neurorit_lens.cli.main import main
from neurorit_lens.data.schema import QAExample
from neurorit_lens.hooks import mlp_hook_name
from neurorit_lens.models.tiny import tiny_model
from neurorit_lens.neuron_sets import Neuron, NeuronSet, save_neuron_sets
from neurorit_lens.viz import neuron_data as nd
from neurorit_lens.viz.neuron_page import neuron_page, neuron_pages
from tests.helpers import cached_tiny_model, make_examples

EXAMPLES = make_examples(3, n_irrelevant=2, counterfactual=True)


def _no_external(html: str, allow_local_script: bool = False) -> None:
    scripts = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']([^\"']+)", html, flags=re.I)
    assert all(allow_local_script and s == "circuitsvis.js" for s in scripts), scripts
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, flags=re.I)
    assert "unpkg.com" not in html and "sourceMappingURL" not in html


def test_parse_neurons_names_label_and_ranges():
    model = cached_tiny_model()
    assert nd.parse_neurons(model, "L1N5, L0N3") == [Neuron(1, 5), Neuron(0, 3)]
    for bad in ("L99N3", "foo", "L0N64"):
        with pytest.raises(ValueError, match=rf"'{bad}'.*layer 0\.\.1 and index 0\.\.63"):
            nd.parse_neurons(model, bad)


def test_activations_match_unbatched_full_cache():
    model = cached_tiny_model()
    records = nd.passage_records(model, EXAMPLES, limit=7)
    neurons = [Neuron(1, 5), Neuron(0, 3), Neuron(1, 0)]
    acts = nd.collect_activations(model, records, neurons, batch_size=3)
    assert len(acts) == 7
    for r, a in zip(records, acts, strict=True):
        _, cache = model.run_with_cache(torch.tensor([r.tokens]))
        ref = torch.stack([cache[mlp_hook_name(n.layer)][0, :, n.index] for n in neurons], -1)
        torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-5)
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())


def test_regions_cover_passage_question_and_answer():
    model = cached_tiny_model()
    ex = EXAMPLES[0]
    records = nd.passage_records(model, [ex])
    assert [r.label for r in records] == [p.label.value for p in ex.passages]
    r = records[0]
    text = lambda region: model.tokenizer.decode([t for t, g in zip(r.tokens, r.regions, strict=True) if g == region])  # noqa: E731
    assert ex.passages[0].text in text("passage")
    assert text("question").strip() == ex.question
    assert text("answer").strip() == ex.answer
    assert r.regions[r.answer_pos] != "answer" and r.regions[r.answer_pos + 1] == "answer"
    with pytest.raises(ValueError, match="no passages"):
        nd.passage_records(model, [QAExample("e", "Q?", ["a"])])


@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_direct_logit_effect_matches_frozen_norm_reference(norm):
    """Add eps * W_out[l, i] to the final residual with the final norm's scale frozen: the
    logit change / eps is the direct effect (exact, since the frozen norm is affine)."""
    model = tiny_model(normalization_type=norm)
    n, eps, pos = Neuron(0, 7), 0.5, 4
    toks = model.to_tokens("The capital of Zarnia is Velmor.")
    _, cache = model.run_with_cache(toks)
    scale = cache["ln_final.hook_scale"]
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"

    def add(x, hook):
        x = x.clone()
        x[:, pos] += eps * model.W_out[n.layer, n.index]
        return x

    logits = model.run_with_hooks(toks, fwd_hooks=[(last, add), ("ln_final.hook_scale", lambda s, hook: scale)])
    ref = (logits - model(toks))[0, pos] / eps
    got = nd.direct_logit_effect(model, n, float(scale[0, pos]))
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-3)


def test_selectivity_and_attribution_stats_against_hand_formulas():
    means = {"relevant": [0.3, 1.2, 0.8, 2.0], "irrelevant": [0.1, -0.2, 0.4]}
    x, y = means["relevant"], means["irrelevant"]
    pooled = ((len(x) - 1) * statistics.variance(x) + (len(y) - 1) * statistics.variance(y)) / (len(x) + len(y) - 2)
    assert nd.selectivity(means) == pytest.approx((statistics.mean(x) - statistics.mean(y)) / math.sqrt(pooled))
    assert math.isnan(nd.selectivity({"relevant": [1.0]}))
    scores = torch.randn(9, 2, 64, generator=torch.Generator().manual_seed(0))
    st = nd.attribution_stats(scores, Neuron(1, 3), threshold=0.1)
    col = scores[:, 1, 3].tolist()
    assert st["n"] == 9 and st["mean"] == pytest.approx(statistics.mean(col))
    assert st["ci"][0] <= st["mean"] <= st["ci"][1]
    assert st["frac_above"] == pytest.approx(sum(v > 0.1 for v in col) / 9)


def _mining_dir(tmp_path: Path) -> Path:
    sets = {"R_excl": NeuronSet({1: [5], 0: [3]}), "I_excl": NeuronSet({0: [9]}), "shared": NeuronSet({1: [2]})}
    save_neuron_sets(tmp_path / "mining" / "neurons.json", sets, {"model_shape": [2, 64]})
    return tmp_path / "mining" / "neurons.json"


def test_page_shows_contexts_histograms_logits_attribution_ablation(tmp_path):
    model = cached_tiny_model()
    scores = {"R": torch.randn(4, 2, 64), "I": torch.randn(5, 2, 64), "threshold": 0.05}
    abl = {"rows": [{"set_name": "R_excl", "metric": "logprob", "context": "noisy", "setting": "noise=0.8",
                     "n_neurons": 2, "n": 4, "effect": {"mean": -0.5, "ci_low": -0.7, "ci_high": -0.3},
                     "diff": {"mean": -0.4, "ci_low": -0.6, "ci_high": -0.2}},
                    {"set_name": "I_excl", "metric": "logprob", "context": "noisy"}]}
    page = neuron_page(model, EXAMPLES, "L1N5", mining=scores, ablation=abl, sets={"R_excl": NeuronSet({1: [5]})},
                       top=4, out=tmp_path)
    html = (tmp_path / "L1N5.html").read_text()
    _no_external(html)
    assert html.count("var CircuitsVis") == 1 and html.count("CircuitsVis.render(") == 4
    assert html.count("data:image/png;base64,") == 1
    for label in ("relevant passage", "irrelevant passage"):
        assert label in html or label in html.replace("&#x27;", "'")
    assert "promoted token" in html and "R_excl" in html and "-0.5 [-0.7, -0.3]" in html
    rep = page.report
    assert rep.sets == ["R_excl"] and rep.attribution["R"]["n"] == 4 and rep.attribution["I"]["n"] == 5
    assert len(rep.promoted) == 10 and rep.promoted[0][1] >= rep.promoted[-1][1]
    assert [r["set_name"] for r in rep.ablation] == ["R_excl"]
    assert "<iframe srcdoc=" in page._repr_html_()


def test_set_pages_and_index(tmp_path):
    model = cached_tiny_model()
    out = tmp_path / "pages"
    idx = neuron_pages(model, EXAMPLES, ["L1N5", "L0N3", "L0N9"], out, pages=["L1N5", "L0N9"], top=2,
                       bundle="shared", sets={"R_excl": NeuronSet({1: [5], 0: [3]})})
    html = idx.read_text()
    _no_external(html)
    assert sorted(p.name for p in out.iterdir()) == ["L0N9.html", "L1N5.html", "circuitsvis.js", "index.html",
                                                            "index.json"]
    assert 'href="L1N5.html"' in html and 'href="L0N3.html"' not in html and "L0N3" in html
    assert html.count("<tr>") == 4 and 'id="neurons"' in html and "addEventListener" in html
    rows = json.loads((out / "index.json").read_text())["neurons"]
    assert [r["neuron"] for r in rows] == ["L1N5", "L0N3", "L0N9"] and rows[0]["sets"] == ["R_excl"]
    assert rows[1]["page"] is None and rows[0]["page"] == "L1N5.html"
    page = (out / "L1N5.html").read_text()
    _no_external(page, allow_local_script=True)
    assert "var CircuitsVis" not in page and "var CircuitsVis" in (out / "circuitsvis.js").read_text()


def test_cli_pages_and_bad_input(tmp_path, capsys):
    npath = _mining_dir(tmp_path)
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(e.to_dict()) for e in EXAMPLES) + "\n")
    out = tmp_path / "out"
    base = ["neuron", "--model", "tiny", "--data", str(data), "--out", str(out), "--top", "2"]
    assert main(base + ["--neurons", "L1N7", "--set", f"{npath}:R_excl", "--limit", "6"]) == 0
    assert sorted(p.name for p in out.glob("*.html")) == ["L0N3.html", "L1N5.html", "L1N7.html", "index.html"]
    for bad, msg in ((["--neurons", "L99N3"], "'L99N3'.*layer 0..1"), (["--neurons", "foo"], "'foo'"),
                     (["--set", f"{npath}:R_exc"], "sets present: I_excl, R_excl, shared"), ([], "--neurons")):
        capsys.readouterr()
        assert main(base + bad) == 2
        assert re.search(msg, capsys.readouterr().err), (bad, msg)


# --------------------------------------------------------------------------------------
# a real browser
# --------------------------------------------------------------------------------------
def chromium() -> str:
    """Path of a Chromium binary; without one, skip with the reason, or fail under CI (``.ci/run``
    installs Debian's ``chromium`` when it is missing, so the page test runs on every submission)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    why = "no Chromium found: install Debian's `chromium` package (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; .ci/run installs it, so CI must not skip the browser test")
    pytest.skip(why)


def render_in_chromium(page: Path, tmp_path: Path, screenshot: Path | None = None) -> tuple[str, str, list[str]]:
    """Load ``page`` in headless Chromium with the network resolver disabled.

    Returns:
        ``(dom after scripts ran, Chromium's log, the URLs the page requested)``. Requests come
        from the net log; the browser's own (updates, time sync) carry the initiator "not an
        origin" and are left out, a request made by the page carries its origin ("null" for a file).
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    netlog = tmp_path / "netlog.json"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", "--disable-domain-reliability", "--disable-client-side-phishing-detection",
           "--disable-features=SpellcheckService,OptimizationHints,MediaRouter,Translate",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={netlog}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400"]
    cmd += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    res = subprocess.run(cmd + [page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    return res.stdout, res.stderr, _page_requests(netlog)


def _page_requests(netlog: Path) -> list[str]:
    text = netlog.read_text() if netlog.exists() else '{"events": []}'
    try:
        events = json.loads(text)["events"]
    except json.JSONDecodeError:  # a log cut short at exit lacks its closing brackets
        events = json.loads(text.rstrip().rstrip(",") + "]}")["events"]
    return sorted({e["params"]["url"] for e in events
                   if "initiator" in e.get("params", {}) and e["params"]["initiator"] != "not an origin"})


def test_page_renders_in_headless_chromium(tmp_path):
    chromium()
    model = cached_tiny_model()
    neuron_page(model, EXAMPLES, "L1N5", top=3, out=tmp_path / "L1N5.html")
    dom, log, urls = render_in_chromium(tmp_path / "L1N5.html", tmp_path)
    outside = [u for u in urls if not u.startswith(("file:", "data:", "about:", "chrome"))]
    assert outside == [], outside
    console = [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], console
    targets = re.findall(r'<div id="nrl-cv-[0-9a-f]+" class="cv-target">(.*?)</div>\s*<script', dom, flags=re.S)
    assert len(targets) == 3 and all("<span" in t and "could not draw" not in t for t in targets), targets[:1]
    # the checks can fail: an outside image and a script error are seen
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="http://example.com/x.png"><script>undefinedFn();</script></body></html>')
    _, log, urls = render_in_chromium(bad, tmp_path / "bad")
    assert any("example.com" in u for u in urls), urls
    assert any("undefinedFn" in ln for ln in log.splitlines()), log[-2000:]
