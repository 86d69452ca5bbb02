"""Similarity heatmaps: the pairwise cosine similarities of a few items or texts, as JSON, a PNG
or an HTML table."""

import html
from dataclasses import dataclass

import numpy as np

from .. import jsondata, vectors
from ..errors import EmbedkitError
from ..extras import require

MAX_ENTRIES = 50
LABEL_CHARS = 40
DECIMALS = 4
# Viridis at 0, 0.25, 0.5, 0.75 and 1: readable in grey and by most color-blind readers.
STOPS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


@dataclass
class Heatmap:
    labels: list  # what each row and column shows: an item's id, or the start of a text
    ids: list  # the item's id, or None for a text
    matrix: np.ndarray  # cosine similarities, rounded to DECIMALS

    def to_dict(self) -> dict:
        return {"labels": self.labels, "ids": self.ids, "matrix": self.matrix.tolist()}


def build(collection, ids=(), texts=()) -> Heatmap:
    """The heatmap of stored items (ids) and then of texts, embedded with the collection's model."""
    ids, texts = list(ids), list(texts)
    if len(ids) + len(texts) < 2:
        raise EmbedkitError("a heatmap needs at least two items or texts")
    if len(ids) + len(texts) > MAX_ENTRIES:
        raise EmbedkitError(f"a heatmap shows at most {MAX_ENTRIES} items and texts, not {len(ids) + len(texts)}")
    for text in texts:
        if not text.strip():
            raise EmbedkitError("a text of the heatmap is empty")
    rows = [collection.vector(id) for id in ids]
    if texts:
        rows += list(collection._embed_checked([collection.document_prefix + text for text in texts]))
    matrix = vectors.normalize_rows(np.stack(rows).astype(np.float64))
    similarities = np.round(np.clip(matrix @ matrix.T, -1, 1), DECIMALS)
    return Heatmap(ids + [_short(text) for text in texts], ids + [None] * len(texts), similarities)


def _short(text) -> str:
    text = " ".join(text.split())
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _range(heatmap):
    """The color scale: from the least similarity (0 if none is less) to 1."""
    return min(0.0, float(heatmap.matrix.min())), 1.0


def color(value, low, high) -> str:
    """The viridis color of value on the scale low..high, as #rrggbb."""
    t = 0.0 if high == low else min(max((value - low) / (high - low), 0.0), 1.0) * (len(STOPS) - 1)
    i = min(int(t), len(STOPS) - 2)
    mix = [round(a + (b - a) * (t - i)) for a, b in zip(STOPS[i], STOPS[i + 1])]
    return "#" + "".join(f"{c:02x}" for c in mix)


def save(heatmap, path, title):
    """Write the heatmap to path: a PNG (.png), an HTML table (.html) or JSON (.json)."""
    suffix = str(path).lower().rsplit(".", 1)[-1]
    if suffix == "png":
        png(heatmap, path, title)
    elif suffix in ("html", "htm", "json"):
        text = html_page(heatmap, title) if suffix != "json" else jsondata.dumps(heatmap.to_dict(), "the heatmap", ensure_ascii=False) + "\n"
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        raise EmbedkitError(f"{path}: a heatmap is written as .png, .html or .json")


def png(heatmap, path, title=None):
    matplotlib = require("matplotlib", "explore", "drawing a PNG heatmap")
    matplotlib.use("Agg")
    from matplotlib import pyplot

    n = len(heatmap.labels)
    side = min(4 + 0.35 * n, 20)
    figure, axes = pyplot.subplots(figsize=(side + 2, side), dpi=100)
    try:
        low, high = _range(heatmap)
        image = axes.imshow(heatmap.matrix, cmap="viridis", vmin=low, vmax=high)
        axes.set_xticks(range(n), heatmap.labels, rotation=60, ha="right", fontsize=8)
        axes.set_yticks(range(n), heatmap.labels, fontsize=8)
        if n <= 15:  # room for the numbers in the cells
            for i in range(n):
                for j in range(n):
                    value = heatmap.matrix[i, j]
                    axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                              color="black" if (value - low) / (high - low or 1) > 0.6 else "white")
        figure.colorbar(image, ax=axes, label="cosine similarity", shrink=0.8)
        if title:
            axes.set_title(title)
        figure.tight_layout()
        figure.savefig(path, format="png", metadata={"Software": None})
    finally:
        pyplot.close(figure)


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="embedkit heatmap">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #222; }}
table.embedkit-heatmap {{ border-collapse: collapse; }}
.embedkit-heatmap th {{ font-weight: normal; text-align: right; padding: 0 0.4em; white-space: nowrap; }}
.embedkit-heatmap thead th {{ writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; vertical-align: bottom; }}
.embedkit-heatmap td {{ width: 3em; height: 2em; text-align: center; font-variant-numeric: tabular-nums; font-size: 0.8em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<table class="embedkit-heatmap">
<thead><tr><th></th>{columns}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
<p>Cosine similarity, from {low:.2f} (dark) to {high:.2f} (light).</p>
</body>
</html>
"""


def html_page(heatmap, title) -> str:
    """One self-contained page: a table whose cells are colored by similarity."""
    low, high = _range(heatmap)
    columns = "".join(f"<th>{html.escape(label)}</th>" for label in heatmap.labels)
    rows = []
    for label, values in zip(heatmap.labels, heatmap.matrix):
        cells = "".join(
            f'<td style="background:{color(v, low, high)};color:{"#000" if (v - low) / (high - low or 1) > 0.6 else "#fff"}"'
            f' title="{v:.4f}">{v:.2f}</td>'
            for v in values
        )
        rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return PAGE.format(title=html.escape(title), columns=columns, rows="\n".join(rows), low=low, high=high)
