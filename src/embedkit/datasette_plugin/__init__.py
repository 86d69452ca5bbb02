"""embedkit's Datasette plugin: the embedkit_* SQL functions, and similar items for every collection.

Installing embedkit with the `datasette` extra registers this package through Datasette's
`datasette` entry point. Its pages are templates in templates/, which a Datasette
`--template-dir` can override file by file, as with any Datasette plugin.

- `/<db>/<collection>/-/similar?q=TEXT` and `?id=ID` (HTML, and `.json`): the top-n items with
  score, id, content and metadata; `n` (1-100), `unique` (a metadata key), `filter=KEY=VALUE`
  (repeatable), `min_score` and `mode` (dense, keyword, hybrid) refine them.
- `/<db>/<collection>/-/related.json?id=ID`: the item's precomputed related list (`embedkit
  related`), the document `embedkit export-related` writes, for dynamic sites.
- `/<db>/<collection>/-/map`: the collection on a 2-D map (embedkit map's page), colored by
  cluster once clustered, or by `color=KEY`; clicking an item opens its row page.
- A "Similar items" link on each row page of a collection, and "Similar items" and "Map" in the
  table's actions menu.
- embedkit's tables of bookkeeping (`_embedkit_*`) are hidden.
- An llm embeddings database is searched in place: its collections share llm's table
  `embeddings`, so their pages are `/<db>/embeddings/-/similar?collection=NAME&...`.
"""

import asyncio
import json
import logging
import urllib.parse

from datasette import hookimpl
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import Forbidden, Response

from .. import llmdb, sqlfunctions, storage
from ..collection import MODES
from ..database import Database
from ..errors import EmbedkitError
from ..explore import maps
from ..filters import parse_filter
from ..llmdb import LlmCollection
from ..models import get_model

log = logging.getLogger("embedkit")

# Bounds on what one request may ask of the model and the search, for public instances.
MAX_TEXT_CHARS = 2000
MAX_N = 100
DEFAULT_N = 10
SNIPPET_CHARS = 300



@hookimpl
def prepare_connection(conn):
    storage.load_sqlite_vec(conn)
    sqlfunctions.register(conn, max_chars=MAX_TEXT_CHARS)


@hookimpl
def get_metadata(datasette):
    # Datasette also hides every table whose name starts with that of a hidden one, so this
    # one name hides the registry, the sources and any index table embedkit adds.
    hidden = {"tables": {"_embedkit_": {"hidden": True}}}
    return {"databases": {name: hidden for name in datasette.databases}}


@hookimpl
def startup(datasette):
    async def load_models():
        # Loading a model takes seconds: done now, not in the first search or SQL query,
        # which Datasette's time limit would cut short.
        models = set()
        for database in datasette.databases.values():
            for found in (await _collections(database)).values():
                models.update(model for _, model in found if model)
        for model in models:
            try:
                await asyncio.to_thread(get_model(model).embed, ["warm up"])
            except Exception as ex:  # a plugin model not installed here: its searches say so
                log.warning("embedkit: cannot load model %s: %s", model, ex)

    return load_models


@hookimpl
def register_routes():
    return [
        (r"^/(?P<database>[^/]+)/(?P<table>[^/]+)/-/similar(?P<as_json>\.json)?$", similar),
        (r"^/(?P<database>[^/]+)/(?P<table>[^/]+)/-/related\.json$", related),
        (r"^/(?P<database>[^/]+)/(?P<table>[^/]+)/-/map$", map_page),
    ]


@hookimpl
def table_actions(datasette, actor, database, table):
    async def links():
        found = await _collection_of(datasette, database, table)
        if len(found) == 1:
            base = datasette.urls.table(database, table)
            return [{"href": base + "/-/similar", "label": "Similar items"}, {"href": base + "/-/map", "label": "Map"}]
        # llm's table of all its collections: a page for each
        return [{"href": _similar_url(datasette, database, table, collection=name), "label": f"Similar items in {name}"}
                for name, _ in found]

    return links


@hookimpl
def extra_body_script(view_name, database, table, request, datasette):
    async def script():
        found = await _collection_of(datasette, database, table) if view_name == "row" else []
        if not found:
            return ""
        item_id, name = tilde_decode(request.url_vars["pks"]), None
        if table == llmdb.EMBEDDINGS and "," in request.url_vars["pks"]:  # llm's: (collection_id, id)
            collection_id, item_id = (tilde_decode(part) for part in request.url_vars["pks"].split(",", 1))
            name = await _llm_collection_name(datasette.get_database(database), collection_id)
            if name is None:
                return ""
        # json.dumps makes the URL a string literal; escaping "<" keeps "</script>" out of it.
        url = json.dumps(_similar_url(datasette, database, table, id=item_id, collection=name)).replace("<", "\\u003c")
        return f"""
(function () {{
  var heading = document.querySelector("h1");
  if (!heading) return;
  var link = document.createElement("a");
  link.href = {url};
  link.textContent = "Similar items";
  var paragraph = document.createElement("p");
  paragraph.className = "embedkit-similar";
  paragraph.appendChild(link);
  heading.insertAdjacentElement("afterend", paragraph);
}})();
"""

    return script


async def _collections(database) -> dict:
    """{table name: [(collection name, model)]} of the collections in a Datasette database:
    one each in embedkit's tables, all an llm database has in its `embeddings`."""

    def read(conn):
        found: dict = {}
        if storage.table_exists(conn, storage.REGISTRY):
            for table, name, model in conn.execute(f"select table_name, name, model from {storage.REGISTRY}"):
                found.setdefault(table, []).append((name, model))
        if llmdb.is_llm_database(conn):
            taken = {name for collections in found.values() for name, _ in collections}
            rows = conn.execute(f"select name, model from {llmdb.COLLECTIONS} order by name").fetchall()
            found[llmdb.EMBEDDINGS] = [(name, llmdb.model_for(model)[0]) for name, model in rows if name not in taken]
        return found

    return await database.execute_fn(read)


async def _collection_of(datasette, database, table) -> list:
    try:
        db = datasette.get_database(database)
    except KeyError:
        return []
    return (await _collections(db)).get(table, [])


async def _llm_collection_name(database, collection_id):
    def read(conn):
        row = conn.execute(f"select name from {llmdb.COLLECTIONS} where id = ?", [collection_id]).fetchone()
        return row and row[0]

    return await database.execute_fn(read)


def _similar_url(datasette, database, table, as_json=False, **params):
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, "", [])}, doseq=True)
    return datasette.urls.table(database, table) + "/-/similar" + (".json" if as_json else "") + (
        "?" + query if query else ""
    )


class _Query:
    """The parameters of a similar-items request, checked."""

    def __init__(self, args):
        self.q = args.get("q")
        self.id = args.get("id")
        self.unique = args.get("unique") or None
        self.mode = args.get("mode") or "dense"
        self.filters = [f for f in args.getlist("filter") if f]
        self.searched = self.q is not None or self.id is not None
        self.n, self.min_score, self.metadata, self.error = DEFAULT_N, None, {}, None
        try:
            self.n = int(args.get("n") or DEFAULT_N)
            if not 1 <= self.n <= MAX_N:
                raise ValueError
        except ValueError:
            self.error = f"n must be a whole number from 1 to {MAX_N}, not {args.get('n')!r}"
            self.n = DEFAULT_N
            return
        try:
            self.min_score = float(args["min_score"]) if args.get("min_score") else None
        except ValueError:
            self.error = f"min_score must be a number, not {args.get('min_score')!r}"
            return
        try:
            self.metadata = dict(parse_filter(f) for f in self.filters)
        except EmbedkitError as ex:
            self.error = str(ex)
            return
        if self.mode not in MODES:
            self.error = f"mode must be one of {', '.join(MODES)}, not {self.mode!r}"
        elif self.id is not None and self.mode != "dense":
            self.error = f"mode={self.mode} searches for q, a text, not for an item's id"
        elif self.q is not None and self.id is not None:
            self.error = "give q (text to search for) or id (an item), not both"
        elif self.q is not None and not self.q.strip():
            self.error = "q is empty: type some text to search for"
        elif self.q is not None and len(self.q) > MAX_TEXT_CHARS:
            self.error = f"q is {len(self.q):,} characters; at most {MAX_TEXT_CHARS:,} are searched"


class _Failure(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


async def similar(datasette, request):
    return await _answer(datasette, request, _similar, as_json=bool(request.url_vars.get("as_json")))


async def related(datasette, request):
    """An item's precomputed related list (embedkit related), as export-related writes it."""
    return await _answer(datasette, request, _related, as_json=True)


async def _related(datasette, request, as_json):
    db, table = await _visible_table(datasette, request, as_json)
    id = request.args.get("id")
    if not id:
        raise _Failure(400, "give id, the item whose related items to list")
    fields = request.args.getlist("field") or None

    def read(conn):
        collection = _collection(conn, db, table, request.args.get("collection"))
        if id not in collection:
            raise _Failure(404, f"No item with id {id!r} in {table}")
        try:
            return collection.related(id, fields)
        except EmbedkitError as ex:  # not computed yet
            raise _Failure(404, str(ex)) from None

    return Response.json({"ok": True, "database": db.name, "table": table, **await db.execute_fn(read)})


async def map_page(datasette, request):
    """The collection on a 2-D map (see explore.maps), each point linking to its row page."""
    return await _answer(datasette, request, _map, as_json=False)


async def _map(datasette, request, as_json):
    db, table = await _visible_table(datasette, request, as_json)
    color = request.args.get("color") or None

    def build(conn):
        try:
            return maps.build(_collection(conn, db, table, request.args.get("collection")), color_by=color)
        except EmbedkitError as ex:  # no clusters yet, an empty collection...
            raise _Failure(400, str(ex)) from None

    result = await db.execute_fn(build)
    data = result.to_dict()
    data["points"]["href"] = [datasette.urls.row(db.name, table, tilde_encode(id)) for id in result.ids]
    context = {
        "database": db.name,
        "table": table,
        "color": color,
        "caption": maps.caption(result),
        "data": maps.json_for_script(data),
        "script": maps.script(),
    }
    return Response.html(
        await datasette.render_template("embedkit_map.html", context, request=request, view_name="embedkit-map")
    )


async def _answer(datasette, request, view, as_json):
    try:
        return await view(datasette, request, as_json)
    except _Failure as failure:
        # Answered here rather than raised to Datasette, which prints a traceback for each one:
        # a visitor's typo is not a server error.
        error = {"ok": False, "error": str(failure), "status": failure.status, "title": None}
        if as_json:
            return Response.json(error, status=failure.status)
        return Response.html(await datasette.render_template("error.html", error, request=request),
                             status=failure.status)


async def _visible_table(datasette, request, as_json):
    """The Datasette database and table a request names, once the actor may view the table."""
    database, table = tilde_decode(request.url_vars["database"]), tilde_decode(request.url_vars["table"])
    try:
        db = datasette.get_database(route=database)
    except KeyError:
        raise _Failure(404, f"Database not found: {database}") from None
    visible, _ = await datasette.check_visibility(
        request.actor,
        permissions=[("view-table", (db.name, table)), ("view-database", db.name), "view-instance"],
    )
    if not visible:
        message = "You do not have permission to view this table"
        if as_json:  # Datasette's forbidden page is HTML even at .json; an API client wants JSON
            raise _Failure(403, message)
        raise Forbidden(message)  # as the table page does: plugins may offer a login instead
    return db, table


def _collection(conn, db, table, name=None):
    """The collection a request is about: the one in table, or the one named (collection=)
    of the several an llm database keeps in its table `embeddings`."""
    found = [c for c in Database(conn).collections() if _table_of(c) == table and name in (None, c.name)]
    if not found:
        missing = f"no collection {name!r} in {table}" if name else f"{table} is not an embedkit collection"
        raise _Failure(404, f"{missing} in {db.name}")
    if len(found) > 1:
        raise _Failure(400, f"{table} holds the collections {', '.join(c.name for c in found)}: choose one with collection=NAME")
    return found[0]


def _table_of(collection) -> str:
    """The table a collection's rows are in, as Datasette shows it."""
    return llmdb.EMBEDDINGS if isinstance(collection, LlmCollection) else collection.table


def _row_path(collection, item_id) -> str:
    """The row of an item, as Datasette names it: its primary key, tilde-encoded."""
    if isinstance(collection, LlmCollection):  # llm's key is (collection_id, id)
        return tilde_encode(str(collection.llm_id)) + "," + tilde_encode(item_id)
    return tilde_encode(item_id)


async def _similar(datasette, request, as_json):
    db, table = await _visible_table(datasette, request, as_json)
    query = _Query(request.args)
    if as_json and not query.error and not query.searched:
        query.error = "give q (text to search for) or id (an item)"

    def search(conn):
        collection = _collection(conn, db, table, request.args.get("collection"))
        info = {"collection": collection, "model": collection.model_id, "count": collection.count()}
        if query.error or not query.searched:
            return info, []
        if query.id is not None and query.id not in collection:
            raise _Failure(404, f"No item with id {query.id!r} in {table}")
        try:
            if query.id is not None:
                return info, collection.similar_by_id(query.id, query.n, unique=query.unique,
                                                      metadata=query.metadata, min_score=query.min_score)
            return info, collection.similar(query.q, query.n, unique=query.unique, metadata=query.metadata,
                                            min_score=query.min_score, mode=query.mode)
        except EmbedkitError as ex:  # e.g. the collection's model is not installed on this server
            raise _Failure(500, f"{table}: {ex}") from None

    info, rows = await db.execute_fn(search)
    collection = info["collection"]
    # Which collection of the table, in the links: llm keeps all of its in one.
    chosen = collection.name if isinstance(collection, LlmCollection) else None
    if as_json:
        if query.error:
            raise _Failure(400, query.error)
        return Response.json(
            {
                "ok": True,
                "database": db.name,
                "table": table,
                "collection": collection.name,
                "model": info["model"],
                "q": query.q,
                "id": query.id,
                "n": query.n,
                "unique": query.unique,
                "filter": query.metadata,
                "mode": query.mode,
                "min_score": query.min_score,
                "rows": [row.to_dict() for row in rows],
            }
        )
    context = {
        "database": db.name,
        "table": table,
        "name": collection.name,
        "collection": chosen,
        "q": query.q,
        "item_id": query.id,
        "n": query.n,
        "unique": query.unique,
        "filters": query.filters,
        "mode": query.mode,
        # An llm collection read in place has no keyword index.
        "modes": [("dense", "by meaning"), ("keyword", "by keywords"), ("hybrid", "both")][: 3 if collection.managed else 1],
        "max_n": MAX_N,
        "error": query.error,
        "searched": query.searched,
        "rows": rows,
        "model": info["model"],
        "count": f"{info['count']:,}",
        "action": _similar_url(datasette, db.name, table),
        "json_url": _similar_url(datasette, db.name, table, as_json=True, collection=chosen, q=query.q, id=query.id,
                                 n=query.n, unique=query.unique, filter=query.filters,
                                 mode=None if query.mode == "dense" else query.mode, min_score=query.min_score),
        "row_url": lambda item_id: datasette.urls.row(db.name, table, _row_path(collection, item_id)),
        "snippet": _snippet,
    }
    return Response.html(
        await datasette.render_template("embedkit_similar.html", context, request=request,
                                        view_name="embedkit-similar"),
        status=400 if query.error else 200,
    )


def _snippet(content):
    if not content:
        return ""
    return content if len(content) <= SNIPPET_CHARS else content[:SNIPPET_CHARS].rstrip() + "…"
