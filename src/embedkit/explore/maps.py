"""A map of a collection: every item (or a sample of them) placed by a 2-D projection of its
vector and colored by cluster or by a metadata value, as one offline HTML page or a PNG."""

import html
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .. import jsondata, storage
from ..errors import EmbedkitError
from ..extras import require
from ..filters import Filter
from . import cluster, projection, tables
from .loading import load, sample

# Tableau's 10 colors and their light variants: told apart by most people, also in print.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#a0cbe8", "#ffbe7d", "#ff9d9a", "#86bcb6", "#8cd17d", "#f1ce63", "#d4a6c8", "#fabfd2",
           "#d7b5a6", "#79706e"]
OTHER_COLOR = "#c8c8c8"
SNIPPET_CHARS = 240
METHODS = ("pca",)


@dataclass
class Map:
    """The points of a map, ready to draw."""

    title: str
    total: int  # items matched; shown are len(ids)
    color_by: "str | None"
    groups: list  # [{"name", "color", "count"}]
    ids: list
    xy: np.ndarray  # (shown, 2)
    group: list  # index into groups, per point
    titles: list
    snippets: list

    def to_dict(self, link=None) -> dict:
        """What the HTML page draws: link is a URL template with {id}, or None."""
        return {
            "title": self.title, "total": self.total, "color_by": self.color_by, "link": link,
            "groups": self.groups,
            "points": {"id": self.ids, "x": np.round(self.xy[:, 0], 5).tolist(),
                       "y": np.round(self.xy[:, 1], 5).tolist(), "group": self.group, "title": self.titles,
                       "text": self.snippets},
        }


def build(collection, color_by=None, title_key="title", max_points=projection.MAX_POINTS, metadata=None,
          where=None, method="pca") -> Map:
    """The map of the items metadata and where choose. color_by: "cluster" (the clusters of
    embedkit cluster, the default when there are some), a metadata key, or None."""
    if method not in METHODS:
        raise EmbedkitError(f"unknown projection {method!r}: use one of {', '.join(METHODS)}")
    if max_points < 1:
        raise EmbedkitError(f"max points must be at least 1, not {max_points}")
    items = load(collection, Filter(metadata or {}, where))
    if not items.ids:
        raise EmbedkitError(f"no items to map in {collection.name!r}")
    rows = sample(items.ids, max_points)
    xy = projection.pca(items.matrix, rows) if len(items.ids) > 1 else np.zeros((1, 2))
    ids = [items.ids[i] for i in rows]
    shown = load(collection, ids=ids, texts=True, metadata=True)  # text of the shown items only
    details = dict(zip(shown.ids, zip(shown.texts, shown.metadata)))
    if color_by is None and tables.record(collection, cluster.KIND) is not None:
        color_by = "cluster"
    values = _values(collection, color_by, ids, details)
    groups, group = _groups(values, color_by)
    titles, snippets = [], []
    for id in ids:
        text, meta = details[id]
        title = (meta or {}).get(title_key)
        titles.append(None if title is None else str(title))
        snippets.append(_snippet(text))
    return Map(collection.name, len(items.ids), color_by, groups, ids, xy, group, titles, snippets)


def _values(collection, color_by, ids, details) -> list:
    """Each item's group name (sortable (order, name) pairs)."""
    if color_by is None:
        return [(0, collection.name)] * len(ids)
    if color_by == "cluster":
        items_table, info_table = cluster.table_names(collection)
        if tables.record(collection, cluster.KIND) is None:
            raise EmbedkitError(f"collection {collection.name!r} has no clusters to color by: "
                                f"run embedkit cluster {collection.name} first")
        names = dict(collection.db.conn.execute(
            f"select i.id, c.cluster || ': ' || c.name from {storage.quote(items_table)} as i "
            f"join {storage.quote(info_table)} as c using (cluster)"))
        order = dict(collection.db.conn.execute(f"select cluster || ': ' || name, cluster from {storage.quote(info_table)}"))
        return [(order[names[id]], names[id]) if id in names else (len(order), "not clustered") for id in ids]
    found = []
    for id in ids:
        value = (details[id][1] or {}).get(color_by)
        found.append((0, "(none)" if value is None else value if isinstance(value, str) else json.dumps(value)))
    return found


def _groups(values, color_by):
    """([{"name", "color", "count"}], index per value): clusters in their order, other values
    most frequent first; past the palette's colors, the rest share one grey group."""
    counts = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    if color_by == "cluster":
        ordered = sorted(counts)
    else:
        ordered = sorted(counts, key=lambda v: (-counts[v], v[1]))
    groups = [{"name": v[1], "color": PALETTE[i], "count": counts[v]} for i, v in enumerate(ordered[:len(PALETTE)])]
    index = {v: i for i, v in enumerate(ordered[:len(PALETTE)])}
    if len(ordered) > len(PALETTE):
        rest = ordered[len(PALETTE):]
        groups.append({"name": f"{len(rest)} others", "color": OTHER_COLOR, "count": sum(counts[v] for v in rest)})
    return groups, [index.get(v, len(PALETTE)) for v in values]


def _snippet(text) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rstrip() + "…"


def script() -> str:
    """map.js, the map's drawing code (no dependencies)."""
    return (resources.files("embedkit") / "static" / "map.js").read_text(encoding="utf-8")


def json_for_script(data) -> str:
    """JSON safe inside <script>: no "</script>" or "<!--" can come out of it."""
    return jsondata.dumps(data, "the map's data", ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="embedkit map">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }}
header {{ padding: 0.5em 1em; border-bottom: 1px solid #ddd; }}
h1 {{ font-size: 1.2em; margin: 0; display: inline; }}
header p {{ display: inline; margin-left: 1em; color: #555; }}
.embedkit-map {{ height: calc(100vh - 3em); }}
</style>
</head>
<body>
<header><h1>{title}</h1><p>{caption}</p></header>
<div class="embedkit-map" data-embedkit-map="embedkit-map-data"></div>
<script type="application/json" id="embedkit-map-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def caption(result: Map) -> str:
    shown = len(result.ids)
    sampled = f"{shown:,} of {result.total:,} items (sampled)" if shown < result.total else f"{shown:,} items"
    colored = f", colored by {result.color_by}" if result.color_by else ""
    return f"{sampled}{colored}. Scroll to zoom, drag to move, double-click to reset; hover for an item."


def html_page(result: Map, link=None) -> str:
    """One self-contained page: the data, the script and the styles inline, nothing fetched."""
    return PAGE.format(title=html.escape(f"Map of {result.title}"), caption=html.escape(caption(result)),
                       data=json_for_script(result.to_dict(link)), script=script())


def save(result: Map, path, link=None):
    """Write the map to path: an HTML page (.html) or a PNG picture (.png)."""
    suffix = str(path).lower().rsplit(".", 1)[-1]
    if suffix in ("html", "htm"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(html_page(result, link))
    elif suffix == "png":
        png(result, path)
    else:
        raise EmbedkitError(f"{path}: a map is written as .html or .png")


def png(result: Map, path):
    """The map as a PNG through matplotlib (the same bytes from the same map)."""
    matplotlib = require("matplotlib", "explore", "drawing a PNG map")
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(10, 7), dpi=100)
    try:
        size = float(np.clip(30_000 / max(len(result.ids), 1), 2, 30))
        groups = np.array(result.group)
        for index, group in enumerate(result.groups):
            chosen = groups == index
            if chosen.any():
                axes.scatter(result.xy[chosen, 0], result.xy[chosen, 1], s=size, c=group["color"], linewidths=0,
                             label=_short(group["name"]) + f" ({group['count']})")
        axes.set_title(f"Map of {result.title}: " + caption(result).split(".")[0])
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_xlabel("first principal axis")
        axes.set_ylabel("second principal axis")
        if result.color_by:
            axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False, markerscale=2)
        figure.tight_layout()
        figure.savefig(path, format="png", metadata={"Software": None})
    finally:
        pyplot.close(figure)


def _short(text, limit=40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
