"""embedkit's Datasette plugin: the embedkit_* SQL functions, and similar items for every collection.

Installing embedkit with the `datasette` extra registers this package through Datasette's
`datasette` entry point. Its pages are templates in templates/, which a Datasette
`--template-dir` can override file by file, as with any Datasette plugin.

- `/<db>/<collection>/-/similar?q=TEXT` and `?id=ID` (HTML, and `.json`): the top-n items with
  score, id, content and metadata; `n` (1-100), `unique` (a metadata key), `filter=KEY=VALUE`
  (repeatable), `min_score` and `mode` (dense, keyword, hybrid) refine them.
- `/<db>/<collection>/-/related.json?id=ID`: the item's precomputed related list (`embedkit
  related`), the document `embedkit export-related` writes, for dynamic sites.
- A "Similar items" link on each row page of a collection, and in the table's actions menu.
- embedkit's tables of bookkeeping (`_embedkit_*`) are hidden.
"""

import asyncio
import json
import logging
import urllib.parse

from datasette import hookimpl
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import Forbidden, Response

from .. import sqlfunctions, storage
from ..collection import MODES
from ..database import Database
from ..errors import EmbedkitError
from ..filters import parse_filter
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
            models.update((await _collections(database)).values())
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
    ]


@hookimpl
def table_actions(datasette, actor, database, table):
    async def links():
        if not await _collection_of(datasette, database, table):
            return []
        return [{"href": datasette.urls.table(database, table) + "/-/similar", "label": "Similar items"}]

    return links


@hookimpl
def extra_body_script(view_name, database, table, request, datasette):
    async def script():
        if view_name != "row" or not await _collection_of(datasette, database, table):
            return ""
        item_id = tilde_decode(request.url_vars["pks"])
        # json.dumps makes the URL a string literal; escaping "<" keeps "</script>" out of it.
        url = json.dumps(_similar_url(datasette, database, table, id=item_id)).replace("<", "\\u003c")
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
    """{table name: model} of the collections in a Datasette database."""

    def read(conn):
        if not storage.table_exists(conn, storage.REGISTRY):
            return {}
        return dict(conn.execute(f"select table_name, model from {storage.REGISTRY}").fetchall())

    return await database.execute_fn(read)


async def _collection_of(datasette, database, table):
    try:
        db = datasette.get_database(database)
    except KeyError:
        return None
    return table in await _collections(db)


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
        collection = _collection(conn, db, table)
        if id not in collection:
            raise _Failure(404, f"No item with id {id!r} in {table}")
        try:
            return collection.related(id, fields)
        except EmbedkitError as ex:  # not computed yet
            raise _Failure(404, str(ex)) from None

    return Response.json({"ok": True, "database": db.name, "table": table, **await db.execute_fn(read)})


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


def _collection(conn, db, table):
    collections = Database(conn)
    name = next((c.name for c in collections.collections() if c.table == table), None)
    if name is None:
        raise _Failure(404, f"{table} is not an embedkit collection in {db.name}")
    return collections.collection(name)


async def _similar(datasette, request, as_json):
    db, table = await _visible_table(datasette, request, as_json)
    query = _Query(request.args)
    if as_json and not query.error and not query.searched:
        query.error = "give q (text to search for) or id (an item)"

    def search(conn):
        collection = _collection(conn, db, table)
        info = {"collection": collection.name, "model": collection.model_id, "count": collection.count()}
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
    if as_json:
        if query.error:
            raise _Failure(400, query.error)
        return Response.json(
            {
                "ok": True,
                "database": db.name,
                "table": table,
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
        "q": query.q,
        "item_id": query.id,
        "n": query.n,
        "unique": query.unique,
        "filters": query.filters,
        "mode": query.mode,
        "modes": [("dense", "by meaning"), ("keyword", "by keywords"), ("hybrid", "both")],
        "max_n": MAX_N,
        "error": query.error,
        "searched": query.searched,
        "rows": rows,
        "model": info["model"],
        "count": f"{info['count']:,}",
        "action": _similar_url(datasette, db.name, table),
        "json_url": _similar_url(datasette, db.name, table, as_json=True, q=query.q, id=query.id,
                                 n=query.n, unique=query.unique, filter=query.filters,
                                 mode=None if query.mode == "dense" else query.mode, min_score=query.min_score),
        "row_url": lambda item_id: datasette.urls.row(db.name, table, tilde_encode(item_id)),
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
