"""The few pieces of HTML the static pages share (report and token explanations): escaping and colours."""

from __future__ import annotations

PALETTE = ["#2166ac", "#d7301f", "#1a9850", "#984ea3", "#ff7f00", "#a6761d", "#e7298a", "#666666", "#17becf",
           "#bcbd22"]


def esc(s: object) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:.2f})"
