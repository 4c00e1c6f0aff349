"""The few pieces of HTML the static pages share (report and token explanations): escaping and colours."""

from __future__ import annotations

PALETTE = ["#2166ac", "#d7301f", "#1a9850", "#984ea3", "#ff7f00", "#a6761d", "#e7298a", "#666666", "#17becf",
           "#bcbd22"]
# one colour per class on every page (report histograms, token explanations), in the classifier's class order:
# Okabe & Ito's palette, told apart with every common colour-vision deficiency
CLASS_PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442"]


def class_colour(index: int) -> str:
    """The colour of the class at `index` of a classifier's classes (wrapping after eight)."""
    return CLASS_PALETTE[index % len(CLASS_PALETTE)]


def esc(s: object) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:.2f})"
