"""Token-level explanations (STC paper, section 5.3): a sentence classifier applied to each token's own
neuron values instead of the pooled ones. Written as JSON lines (one per text and classifier) and a
static, self-contained HTML page that colours each token by its class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..classifier.classifier import Classifier
from ..classifier.linear import probabilities
from ..core.atomic import commit, remove_dead_temps, staging, tmp_name
from ..core.html import class_colour, esc, rgba
from ..core.names import shown
from ..models.loading import LoadedModel

EXPLAIN_POOLINGS = ("mean", "max")  # poolings whose classifiers have a per-token reading


def explainable(clf: Classifier) -> bool:
    """Whether a classifier has a per-token reading: a mean- or max-pooled one, or an ensemble with such a
    member (each token is then read by every member as if it were the whole text, a single-token member's
    neurons included)."""
    if clf.head == "ensemble":
        return any(m["pooling"] in EXPLAIN_POOLINGS for m in clf.manifest.members)
    return clf.manifest.pooling in EXPLAIN_POOLINGS


def token_spans(lm: LoadedModel, text: str, ids: list[int]) -> list[tuple[str, int, int]]:
    """(token as shown, start, end) per token id; start = end = -1 for special tokens."""
    tok = lm.tokenizer
    shown = tok.convert_ids_to_tokens(ids)
    special = set(tok.all_special_ids)
    if getattr(tok, "is_fast", False):
        enc = tok(text, truncation=True, max_length=len(ids), add_special_tokens=True,
                  return_offsets_mapping=True, return_token_type_ids=False)
        if enc["input_ids"][:len(ids)] == ids:
            out = []
            for t, i, (a, b) in zip(shown, ids, enc["offset_mapping"][:len(ids)]):
                out.append((t, -1, -1) if i in special or a == b else (text[a:b], a, b))
            return out
    return [(t, -1, -1) for t in shown]


class Explainer:
    """Writes token-level explanations: one JSON line per (text, classifier), plus an HTML page."""

    def __init__(self, prefix: Path, limit: int) -> None:
        self.jsonl = prefix.with_name(prefix.name + ".explain.jsonl")
        self.html = prefix.with_name(prefix.name + ".explain.html")
        self.limit = limit
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        for f in (self.jsonl, self.html):
            remove_dead_temps(f)  # left by a killed run
        self._tmp = tmp_name(self.jsonl)
        self._f = open(self._tmp, "w", encoding="utf-8")
        self._cards: list[str] = []
        self.n = 0

    def add(self, *, text_id: str, text: str, clf: Classifier, scores: np.ndarray,
            spans: list[tuple[str, int, int]], token_scores: np.ndarray) -> None:
        """One text under one classifier. scores: [K] the text's linear scores; token_scores: [T, K]."""
        if clf.is_regression:
            self._write(_value_record(text_id, text, clf, scores, spans, token_scores))
            return
        classes = [str(c) for c in clf.classes_]
        proba = probabilities(scores[None, :])[0]
        label = classes[int(np.argmax(proba))]
        token_proba = probabilities(token_scores)
        # evidence of each token for its own most likely class: log-odds against the runner-up
        z = np.concatenate([np.zeros_like(token_scores), token_scores], 1) if token_scores.shape[1] == 1 \
            else token_scores
        top2 = np.sort(z, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        rec = {"id": text_id, "classifier": clf.name, "classifier_fingerprint": clf.fingerprint,
               "pooling": clf.manifest.pooling, "classes": classes, "label": label,
               "class_names": [shown(c, clf.label_names_) for c in classes],
               "probabilities": [round(float(p), 6) for p in proba],
               "scores": [round(float(v), 5) for v in scores], "text": text,
               "tokens": [{"token": t, "start": a, "end": b, "label": classes[int(np.argmax(p))],
                           "probabilities": [round(float(x), 6) for x in p],
                           "scores": [round(float(v), 5) for v in zt], "margin": round(float(m), 4)}
                          for (t, a, b), p, zt, m in zip(spans, token_proba, token_scores, margin)]}
        self._write(rec)

    def _write(self, rec: dict) -> None:
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.n += 1
        if len(self._cards) < self.limit:
            self._cards.append(_html_value_card(rec) if "value" in rec else _html_card(rec))

    def close(self) -> None:
        self._f.close()
        commit(self._tmp, self.jsonl)
        with staging(self.html) as tmp:
            tmp.write_text(_html_page(self._cards, self.n, self.limit), encoding="utf-8")
            commit(tmp, self.html)

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)


def _value_record(text_id: str, text: str, clf: Classifier, scores: np.ndarray, spans: list[tuple[str, int, int]],
                  token_scores: np.ndarray) -> dict:
    """A regression classifier's reading of one text: each token's own predicted value and, for a mean-pooled
    classifier, its contribution: the prediction is the intercept plus the sum of the contributions
    ((token value - intercept) / tokens, exactly, since the mean of the token values is the text's value).
    A max-pooled value is not a sum over tokens, nor is a consolidation head's (it is not linear):
    contributions are null there."""
    b = float(np.mean(clf.intercept_)) if clf.head == "ensemble" else float(clf.intercept_[0])  # members' mean
    n = len(token_scores)
    # additive when the value is linear in mean-pooled features: a linear head, or an ensemble of them (the mean
    # of linear predictions is linear)
    mean = all(g.pooling == "mean" for g in clf.groups) and clf.head in ("linear", "ensemble")
    return {"id": text_id, "classifier": clf.name, "classifier_fingerprint": clf.fingerprint,
            "pooling": clf.manifest.pooling, "value": round(float(scores[0]), 6), "intercept": round(b, 6),
            "text": text,
            "tokens": [{"token": t, "start": a, "end": e, "value": round(float(v), 6),
                        "contribution": round((float(v) - b) / n, 6) if mean else None}
                       for (t, a, e), v in zip(spans, token_scores[:, 0])]}


def _html_value_card(rec: dict) -> str:
    """Tokens coloured by their contribution (max pooling: their value against the text's), blue raising
    the predicted value, vermillion lowering it (the first two class colours)."""
    text = rec["text"]
    push = [t["contribution"] if t["contribution"] is not None else t["value"] - rec["value"] for t in rec["tokens"]]
    scale = max((abs(v) for v in push), default=0.0)
    chips = []
    for t, v in zip(rec["tokens"], push):
        colour = class_colour(0) if v > 0 else class_colour(1)
        alpha = min(1.0, abs(v) / scale) if scale > 0 else 0.0
        what = f"contribution {t['contribution']:+.4f}" if t["contribution"] is not None else \
            ("max-pooled" if rec["pooling"] == "max" else "a non-linear head: not additive")
        chips.append(f'<span class="t" style="background:{rgba(colour, 0.8 * alpha)}" '
                     f'title="{esc(t["token"])}: value {t["value"]:.4f}, {what}">')
    return (f'<div class="card"><div class="head">predicted value <b>{rec["value"]:.4f}</b> '
            f'<span class="p">(blue tokens raise it, vermillion ones lower it)</span> <span class="id">'
            f'{esc(rec["classifier"])} · id {esc(rec["id"])} · {rec["pooling"]}-pooled</span></div>'
            + _coloured_text(text, rec["tokens"], chips) + "</div>")


def _coloured_text(text: str, tokens: list[dict], chips: list[str]) -> str:
    """The text with each token wrapped in its chip (an opening <span>), in place; special tokens (no span
    in the text) listed after it."""
    parts, pos, specials = [], 0, []
    for t, chip in zip(tokens, chips):
        if t["start"] < 0:
            specials.append(chip + esc(t["token"]) + "</span>")
            continue
        if t["start"] > pos:
            parts.append(esc(text[pos:t["start"]]))
        if t["start"] >= pos:
            parts.append(chip + esc(text[t["start"]:t["end"]]) + "</span>")
            pos = t["end"]
    parts.append(esc(text[pos:]))
    return (f'<div class="text">{"".join(parts)}</div>'
            + (f'<div class="sp">special tokens: {" ".join(specials)}</div>' if specials else ""))


def _tint(classes: list[str], token: dict, scale: float) -> str:
    """The colour of the token's most likely class; opacity = its log-odds margin over the runner-up class,
    relative to the largest margin in the text (so the page shows where the evidence sits in each text)."""
    k = classes.index(token["label"])
    alpha = min(1.0, token["margin"] / scale) if scale > 0 else 0.0
    return rgba(class_colour(k), 0.8 * alpha)


def _html_card(rec: dict) -> str:
    classes = rec["classes"]
    display = dict(zip(classes, rec.get("class_names", classes)))  # "negative (0)" with label names
    text = rec["text"]
    scale = max((t["margin"] for t in rec["tokens"]), default=0.0)
    chips = []
    for t in rec["tokens"]:
        title = esc(f"{t['token']}: " + ", ".join(f"{display[c]} {p:.3f}" for c, p in zip(classes, t["probabilities"]))
                     + f"; log-odds margin {t['margin']:.2f}")
        chips.append(f'<span class="t" style="background:{_tint(classes, t, scale)}" title="{title}">')
    verdict = " · ".join(f"P({display[c]}) {p:.3f}" for c, p in zip(classes, rec["probabilities"]))
    colour = class_colour(classes.index(rec["label"]))
    swatches = " ".join(f'<span class="t" style="background:{rgba(class_colour(i), 0.8)}">'
                        f'{esc(display[c])}</span>' for i, c in enumerate(classes))
    return (f'<div class="card"><div class="head">classes {swatches} · predicted '
            f'<b style="color:{colour}">{esc(display[rec["label"]])}</b> '
            f'<span class="p">{esc(verdict)}</span> <span class="id">{esc(rec["classifier"])} · id '
            f'{esc(rec["id"])} · {rec["pooling"]}-pooled</span></div>'
            + _coloured_text(text, rec["tokens"], chips) + "</div>")


def _html_page(cards: list[str], n: int, limit: int) -> str:
    legend = ""
    more = f"<p>Showing {len(cards)} of {n} explained texts; all are in the .explain.jsonl file.</p>" \
        if n > len(cards) else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stcstore token explanations</title>
<style>
body {{ font: 15px/1.6 system-ui, sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: .6em .9em; margin: .8em 0; }}
.head {{ font-size: 13px; margin-bottom: .3em; }} .p, .id {{ color: #666; }}
.text {{ font-size: 17px; }} .t {{ border-radius: 3px; padding: 0 1px; }}
.sp {{ font-size: 12px; color: #666; margin-top: .3em; }}
</style></head><body>
<h1>Token-level explanations</h1>
<p>Each token is coloured by the class the classifier gives it when it is applied to that token's own
neuron values instead of the pooled ones (STC paper, section 5.3). The stronger the colour, the larger the
token's log-odds margin for that class over the runner-up, relative to the strongest token of the same
text. Hover a token for its class probabilities. The heading of each text shows the classifier's
prediction for the whole text.</p>{legend}{more}
{"".join(cards)}
</body></html>
"""
