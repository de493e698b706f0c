"""Offline circuitsvis panels and self-contained HTML pages (no CDN, no network).

circuitsvis' own HTML loads its JavaScript from a CDN (blank without internet) and its
notebook display first probes an outside host. Here every page embeds circuitsvis' inline
bundle (``circuitsvis/dist/cdn/iife.js``, shipped with the package) once, in a classic
``<script>``, and each :class:`CVPanel` renders into its own ``<div>`` with a unique id, so
one page can hold many views (the run report and the neuron pages do). In Jupyter a
:class:`NeuronView` shows itself as an ``<iframe srcdoc=...>`` holding such a page.

>>> panel = CVPanel("ColoredTokens", {"tokens": ["a", "b"], "values": [0.5, -1.0]})
>>> page = page_html(panel.html())
>>> "CircuitsVis.render" in page and "unpkg.com" not in page
True
"""

from __future__ import annotations

import functools
import html as html_lib
import json
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurorit_lens.io import atomic_write_json, atomic_write_text, read_json

__all__ = ["COMPONENTS", "CVPanel", "NeuronView", "bundle_path", "circuitsvis_bundle", "page_html"]

COMPONENTS = ("TextNeuronActivations", "ColoredTokens", "ColoredTokensMulti")


# --------------------------------------------------------------------------------------
# the offline bundle and HTML assembly
# --------------------------------------------------------------------------------------
def bundle_path() -> Path:
    """Path of circuitsvis' self-contained browser bundle (``dist/cdn/iife.js``)."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.exists():
        raise FileNotFoundError(f"circuitsvis bundle not found at {path}; reinstall circuitsvis (>=1.43)")
    return path


@functools.lru_cache(maxsize=1)
def circuitsvis_bundle() -> str:
    """circuitsvis' inline JavaScript, safe to put inside one ``<script>`` element.

    ``</script`` inside the bundle's string literals becomes ``<\\/script`` (the same
    string in JS, but it no longer ends the element), and the source-map comment is
    dropped so a browser's dev tools do not try to fetch the map.
    """
    js = bundle_path().read_text(encoding="utf-8")
    js = js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    lines = [ln for ln in js.splitlines() if not ln.startswith("//# sourceMappingURL")]
    return "\n".join(lines)


def _js_json(obj: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    s = json.dumps(obj, allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(x: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by 0 in nested lists of floats."""
    if isinstance(x, float):
        return x if math.isfinite(x) else 0.0
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


@dataclass
class CVPanel:
    """One circuitsvis component with its props, a title and a caption.

    Args:
        component: circuitsvis React component (``TextNeuronActivations``, ``ColoredTokens``).
        props: the component's props (JSON-able: lists, numbers, strings).
        title: heading shown above the panel.
        caption: one or two sentences saying what is shown.
    """

    component: str
    props: dict[str, Any]
    title: str = ""
    caption: str = ""

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(f"unknown circuitsvis component {self.component!r}; choose from {COMPONENTS}")
        self.props = {k: _finite(v.tolist() if hasattr(v, "tolist") else v)
                      for k, v in self.props.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"component": self.component, "props": self.props, "title": self.title, "caption": self.caption}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CVPanel:
        return cls(d["component"], dict(d["props"]), d.get("title", ""), d.get("caption", ""))

    def html(self, elem_id: str | None = None) -> str:
        """The panel's ``<section>``: heading, caption, target ``<div>`` and its render call.

        Needs the circuitsvis bundle earlier on the page (see :func:`page_html`).
        """
        elem_id = elem_id or f"nrl-cv-{uuid.uuid4().hex[:12]}"
        head = f"<h3>{html_lib.escape(self.title)}</h3>\n" if self.title else ""
        cap = f'<p class="caption">{html_lib.escape(self.caption)}</p>\n' if self.caption else ""
        return (
            f'<section class="cv-panel">\n{head}{cap}<div id="{elem_id}" class="cv-target"></div>\n'
            f"<script>\n(function() {{\n"
            f"  var el = document.getElementById({json.dumps(elem_id)});\n"
            f"  try {{ CircuitsVis.render({json.dumps(elem_id)}, CircuitsVis.{self.component}, "
            f"{_js_json(self.props)}); }}\n"
            f"  catch (e) {{ el.textContent = 'circuitsvis could not draw this view: ' + e; }}\n"
            f"}})();\n</script>\n</section>\n"
        )


_PAGE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 16px 24px;
       color: #1d1d1f; max-width: 1150px; }
h1 { font-size: 1.45em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.0em; margin: 1.0em 0 0.2em 0; }
.cv-panel { margin: 8px 0 18px 0; padding: 6px 10px; border: 1px solid #e3e3e3; border-radius: 6px; }
.caption { color: #555; font-size: 0.9em; margin: 0.1em 0 0.4em 0; }
.cv-target { min-height: 24px; }
"""

_FRAME_RESIZE = """
<script>
(function() {
  if (!window.frameElement || typeof ResizeObserver === "undefined") return;
  var fit = function() { window.frameElement.style.height = (document.documentElement.scrollHeight + 4) + "px"; };
  new ResizeObserver(fit).observe(document.body); fit();
})();
</script>
"""


def page_html(body: str, title: str = "neurorit_lens", extra_head: str = "", resize_frame: bool = False,
              include_bundle: bool = True) -> str:
    """A complete, self-contained HTML page: the circuitsvis bundle once, then ``body``.

    Args:
        body: HTML holding any number of :meth:`CVPanel.html` sections (and anything else).
        title: the page title.
        extra_head: more ``<head>`` content (for example a stylesheet).
        resize_frame: when shown inside an ``<iframe>``, grow the frame to fit the content.
        include_bundle: embed the circuitsvis bundle (1.3 MB; leave it out for pages without views).

    Returns:
        The page as a string. It loads nothing from the network.
    """
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html_lib.escape(title)}</title>\n<style>{_PAGE_CSS}</style>\n{extra_head}\n"
        + (f"<script>\n{circuitsvis_bundle()}\n</script>\n" if include_bundle else "")
        + f"</head>\n<body>\n{body}\n"
        f"{_FRAME_RESIZE if resize_frame else ''}</body>\n</html>\n"
    )


@dataclass
class NeuronView:
    """A group of circuitsvis panels shown together, offline.

    ``_repr_html_`` shows it in Jupyter (an ``iframe`` whose ``srcdoc`` is the full page,
    so it works without internet and several views on one notebook never clash);
    :meth:`save` writes a self-contained HTML page; :meth:`save_json` keeps the panel data
    so a report can embed the view later without the model.
    """

    panels: list[CVPanel] = field(default_factory=list)
    title: str = "Neuron view"
    description: str = ""

    def __add__(self, other: NeuronView) -> NeuronView:
        if not isinstance(other, NeuronView):
            return NotImplemented
        return NeuronView(self.panels + other.panels, self.title, self.description)

    def __len__(self) -> int:
        return len(self.panels)

    def fragment(self, heading_level: int = 2) -> str:
        """The view's HTML without the bundle (for pages that embed the bundle once)."""
        h = f"h{heading_level}"
        parts = [f"<{h}>{html_lib.escape(self.title)}</{h}>"] if self.title else []
        if self.description:
            parts.append(f'<p class="caption">{html_lib.escape(self.description)}</p>')
        parts += [p.html() for p in self.panels]
        return "\n".join(parts)

    def html(self, resize_frame: bool = False) -> str:
        """The view as a complete self-contained page."""
        return page_html(self.fragment(heading_level=1), title=self.title, resize_frame=resize_frame)

    def _repr_html_(self) -> str:
        doc = html_lib.escape(self.html(resize_frame=True), quote=True)
        height = 140 + 260 * max(1, len(self.panels))
        return (f'<iframe srcdoc="{doc}" style="width: 100%; height: {height}px; border: none;" '
                f'title="{html_lib.escape(self.title)}"></iframe>')

    def save(self, path: str | os.PathLike) -> Path:
        """Write the self-contained HTML page (atomically)."""
        return atomic_write_text(path, self.html())

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "description": self.description, "panels": [p.to_dict() for p in self.panels]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NeuronView:
        return cls([CVPanel.from_dict(p) for p in d.get("panels", [])], d.get("title", ""), d.get("description", ""))

    def save_json(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> NeuronView:
        return cls.from_dict(read_json(path))
