"""embedkit's Datasette plugin: the embedkit_* SQL functions, and similar items for every collection.

Installing embedkit with the `datasette` extra registers this package through Datasette's
`datasette` entry point. Its pages are templates in templates/, which a Datasette
`--template-dir` can override file by file, as with any Datasette plugin. It works with
Datasette 0.65 and the 1.0 alphas (permissions.py holds what differs).

- `/<db>/<collection>/-/similar?q=TEXT` and `?id=ID` (HTML, and `.json`): the top-n items with
  score, id, content and metadata; `n`, `unique` (a metadata key), `filter=KEY=VALUE`
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

Everything is safe to publish: visitors make only the models work that the owner allows
(settings.py), within budgets, time limits and Datasette's own limits; the databases are only
ever read (an older embedkit schema is read as it is, never migrated).
"""

import asyncio
import concurrent.futures
import json
import logging
import math
import re
import urllib.parse
import weakref

from datasette import hookimpl
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import Forbidden, NotFound, Response

from .. import llmdb, sqlfunctions, storage
from ..collection import MODES
from ..database import Database
from ..errors import EmbedkitError
from ..explore import maps
from ..filters import parse_filter
from ..llmdb import LlmCollection
from ..modelguard import ModelGuard, NotAllowed, check_allowed
from ..models import get_model
from . import databases, permissions
from .budget import Budget, Spent
from .settings import Settings, settings

log = logging.getLogger("embedkit")

SNIPPET_CHARS = 300


class _Instance:
    """What one Datasette instance's requests share: its model calls and its budget."""

    def __init__(self):
        self.guard = ModelGuard()
        self.budget = Budget()


_instances: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _instance(datasette) -> _Instance:
    if datasette not in _instances:
        _instances[datasette] = _Instance()
    return _instances[datasette]


def _sql_time_limit(datasette) -> float:
    return (datasette.setting("sql_time_limit_ms") or 1000) / 1000


@hookimpl
def prepare_connection(conn, database, datasette):
    storage.load_sqlite_vec(conn)
    config = settings(datasette, database)
    instance = _instance(datasette)

    def before_remote_call():
        instance.budget.spend("(from SQL)", config.calls_per_minute)

    def on_error(message):
        log.warning("embedkit: SQL on %s: %s", database, message)

    sqlfunctions.register(conn, limits=sqlfunctions.Limits(
        max_chars=config.max_text_chars,
        max_dimensions=config.max_dimensions,
        models=frozenset(config.models),
        calls=config.sql_model_calls,
        timeout=min(_model_time_limit(datasette, config), _sql_time_limit(datasette)),
        guard=instance.guard,
        before_remote_call=before_remote_call,
        on_error=on_error,
    ))


def _model_time_limit(datasette, config: Settings) -> float:
    if config.model_time_limit_ms is not None:
        return config.model_time_limit_ms / 1000
    return _sql_time_limit(datasette)


@hookimpl
def get_metadata(datasette):
    # Datasette 0.65 (1.0 hides tables starting with "_" itself, and has no such hook). Datasette
    # also hides every table whose name starts with that of a hidden one, so this one name hides
    # the registry, the sources and any index table embedkit adds. A new dict for each database,
    # each time: Datasette merges the owner's metadata into what this returns.
    return {"databases": {name: {"tables": {"_embedkit_": {"hidden": True}}} for name in datasette.databases}}


@hookimpl
def startup(datasette):
    async def start():
        settings(datasette)  # a mistake in the settings stops Datasette here, saying which
        await databases.check(datasette)
        if not settings(datasette).load_models_at_startup:
            return
        # Loading a model takes seconds: done now, not in the first search or SQL query, which
        # the time limit would cut short. Never a model that calls a service: it may charge.
        names = set()
        for database in datasette.databases.values():
            for found in (await _collections(database)).values():
                names.update(model for _, model in found if model)
        for name in sorted(names):
            try:
                model = get_model(name, local_paths=False)
                if not model.remote:
                    await asyncio.to_thread(model.embed, ["warm up"])
            except Exception as ex:  # a plugin model not installed here: its searches say so
                log.warning("embedkit: cannot load model %s: %s", name, ex)

    return start


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


@hookimpl
def handle_exception(datasette, request, exception):
    # Datasette reads `notes.md` in /db/table/notes.md as the row `notes` in the format `md`:
    # a row id with a dot must be typed as notes~2Emd. An item with the id as typed is sent there.
    match = _ROW_PATH.match(request.path)
    if not isinstance(exception, NotFound) or match is None or "." not in match["id"]:
        return None

    async def redirect():
        database, table, id = (tilde_decode(part) for part in match.groups())
        try:
            db = datasette.get_database(route=database)
        except KeyError:
            return None
        # llm's rows are keyed by (collection id, id): an id typed alone is never one.
        if table not in await _collections(db) or table == llmdb.EMBEDDINGS:
            return None
        # Where the visitor may not look, whether an id exists is not theirs to learn either.
        if not await permissions.may_view_table(datasette, request.actor, db.name, table):
            return None
        found = await db.execute(f"select 1 from {storage.quote(table)} where id = ?", [id])
        return Response.redirect(datasette.urls.row(db.name, table, tilde_encode(id))) if found.first() else None

    return redirect


_ROW_PATH = re.compile(r"^/(?P<database>[^/]+)/(?P<table>[^/]+)/(?P<id>[^/]+)$")


async def _collections(database) -> dict:
    """{table name: [(collection name, model)]} of the collections in a Datasette database: one
    each in embedkit's tables, all an llm database has in its `embeddings` ({} if it cannot be read)."""

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

    try:
        return await database.execute_fn(read)
    except Exception as ex:  # the driver's DatabaseError: a database this server cannot read
        log.warning("embedkit: cannot read the collections of %s: %s", database.name, ex)
        return {}


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

    def __init__(self, args, config: Settings, max_n: int):
        self.q = args.get("q")
        self.id = args.get("id")
        self.unique = args.get("unique") or None
        self.mode = args.get("mode") or "dense"
        self.filters = [f for f in args.getlist("filter") if f]
        self.searched = self.q is not None or self.id is not None
        self.max_n = max_n
        self.n, self.min_score, self.status = min(config.default_n, max_n), None, 400
        self.metadata: dict = {}
        self.error = self._check(args, config)

    def _check(self, args, config):
        try:
            self.n = int(args.get("n") or self.n)
            if not 1 <= self.n <= self.max_n:
                raise ValueError
        except ValueError:
            self.n = min(config.default_n, self.max_n)
            return f"n must be a whole number from 1 to {self.max_n}, not {args.get('n')!r}"
        try:
            self.min_score = float(args["min_score"]) if args.get("min_score") else None
        except ValueError:
            return f"min_score must be a number, not {args.get('min_score')!r}"
        if self.min_score is not None and not math.isfinite(self.min_score):
            self.min_score = None
            return f"min_score must be a finite number, not {args.get('min_score')!r}"
        if len(self.filters) > config.max_filters:
            return f"{len(self.filters)} filters; at most {config.max_filters} may be given"
        try:
            self.metadata = dict(parse_filter(f) for f in self.filters)
        except EmbedkitError as ex:
            return str(ex)
        if self.mode not in MODES:
            return f"mode must be one of {', '.join(MODES)}, not {self.mode!r}"
        if self.id is not None and self.mode != "dense":
            return f"mode={self.mode} searches for q, a text, not for an item's id"
        if self.q is not None and self.id is not None:
            return "give q (text to search for) or id (an item), not both"
        if self.q is not None and not self.q.strip():
            return "q is empty: type some text to search for"
        if self.q is not None and len(self.q) > config.max_text_chars:
            return f"q is {len(self.q):,} characters; at most {config.max_text_chars:,} are searched"
        return None


class _Failure(Exception):
    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _json(data, status=200, headers=None) -> Response:
    """Strict JSON: NaN and infinity are refused here rather than sent as invalid JSON."""
    return Response(json.dumps(data, allow_nan=False), status=status, headers=headers,
                    content_type="application/json; charset=utf-8")


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
        collection, pending = _collection(conn, db, table, request.args.get("collection"))
        if id not in collection:
            raise _Failure(404, f"No item with id {id!r} in {table}")
        if pending:
            raise _Failure(503, _older(db))
        try:
            return collection.related(id, fields)
        except EmbedkitError as ex:  # not computed yet
            raise _Failure(404, str(ex)) from None

    return _json({"ok": True, "database": db.name, "table": table, **await db.execute_fn(read)})


async def map_page(datasette, request):
    """The collection on a 2-D map (see explore.maps), each point linking to its row page."""
    return await _answer(datasette, request, _map, as_json=False)


async def _map(datasette, request, as_json):
    db, table = await _visible_table(datasette, request, as_json)
    color = request.args.get("color") or None

    def build(conn):
        try:
            return maps.build(_collection(conn, db, table, request.args.get("collection"))[0], color_by=color)
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
            return _json(error, status=failure.status, headers=failure.headers)
        return Response.html(await datasette.render_template("error.html", error, request=request),
                             status=failure.status, headers=failure.headers)


async def _visible_table(datasette, request, as_json):
    """The Datasette database and table a request names, once the actor may view the table."""
    database, table = tilde_decode(request.url_vars["database"]), tilde_decode(request.url_vars["table"])
    try:
        db = datasette.get_database(route=database)
    except KeyError:
        raise _Failure(404, f"Database not found: {database}") from None
    if not await permissions.may_view_table(datasette, request.actor, db.name, table):
        message = "You do not have permission to view this table"
        if as_json:  # Datasette's forbidden page is HTML even at .json; an API client wants JSON
            raise _Failure(403, message)
        raise Forbidden(message)  # as the table page does: plugins may offer a login instead
    return db, table


def _collection(conn, db, table, name=None):
    """The collection a request is about (the one in table, or the one named by collection=
    of the several an llm database keeps in its table `embeddings`), and the schema upgrades
    its database lacks."""
    database = Database(conn, read_only=True)
    found = [c for c in database.collections() if _table_of(c) == table and name in (None, c.name)]
    if not found:
        missing = f"no collection {name!r} in {table}" if name else f"{table} is not an embedkit collection"
        raise _Failure(404, f"{missing} in {db.name}")
    if len(found) > 1:
        raise _Failure(400, f"{table} holds the collections {', '.join(c.name for c in found)}: choose one with collection=NAME")
    return found[0], database.pending_migrations()


def _table_of(collection) -> str:
    """The table a collection's rows are in, as Datasette shows it."""
    return llmdb.EMBEDDINGS if isinstance(collection, LlmCollection) else collection.table


def _row_path(llm_id, item_id) -> str:
    """The row of an item, as Datasette names it: its primary key, tilde-encoded; llm's key is
    (collection_id, id)."""
    return tilde_encode(item_id) if llm_id is None else tilde_encode(str(llm_id)) + "," + tilde_encode(item_id)


def _older(db) -> str:
    return (f"{db.name} was made by an older embedkit and is served as it is: run `embedkit migrate -d "
            f"{db.path}` where it can be written, for keyword search and related items")


async def _query_vector(datasette, request, db, table, info, config: Settings, text):
    """The collection's query vector for text, from a model call made off Datasette's threads,
    within the time limit and, for a model that calls a service, the owner's budget."""
    instance = _instance(datasette)
    try:
        model = get_model(info["model"], local_paths=False)
        if info["model_dimensions"]:
            model = model.truncated(info["model_dimensions"])
        check_allowed(model, config.models, {info["model"]})
    except NotAllowed as ex:
        raise _Failure(403, f"{table}: {ex}") from None
    except EmbedkitError as ex:  # e.g. the collection's model is not installed on this server
        raise _Failure(500, f"{table}: {ex}") from None

    def before_call():
        ip = (request.scope.get("client") or ("unknown",))[0]
        instance.budget.spend(model.model_id, config.calls_per_minute, ip, config.calls_per_minute_per_ip)

    try:
        return await _vector(instance.guard, model, info["query_prefix"] + text, _model_time_limit(datasette, config),
                             before_call if model.remote else None)
    except Spent as ex:
        raise _Failure(429, str(ex), {"Retry-After": str(math.ceil(ex.retry_after))}) from None
    except EmbedkitError as ex:  # no answer in time, or the model cannot run on this server
        raise _Failure(503, f"{table}: {ex}") from None


async def _vector(guard: ModelGuard, model, text, timeout, before_call):
    """guard.vector(), without a thread waiting for the model meanwhile."""
    started = guard.start(model, text, before_call)
    if not isinstance(started, concurrent.futures.Future):
        return started
    try:
        return guard.finish(model, text, await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(started)), timeout))
    except asyncio.TimeoutError:
        raise guard.late(model, text, started, timeout) from None


async def _similar(datasette, request, as_json):
    db, table = await _visible_table(datasette, request, as_json)
    config = settings(datasette, db.name, table)
    query = _Query(request.args, config, min(config.max_n, datasette.setting("max_returned_rows") or config.max_n))
    if as_json and not query.error and not query.searched:
        query.error = "give q (text to search for) or id (an item)"

    def describe(conn, collection=None, pending=None):
        if collection is None:
            collection, pending = _collection(conn, db, table, request.args.get("collection"))
        llm_id = collection.llm_id if isinstance(collection, LlmCollection) else None
        return {"collection": collection.name, "model": collection.model_id,
                "count": None if as_json else collection.count(), "query_prefix": collection.query_prefix,
                "model_dimensions": collection.model_dimensions, "pending": pending, "llm_id": llm_id,
                # An llm collection read in place has no keyword index.
                "managed": collection.managed}

    def search(conn, vector=None):
        collection, pending = _collection(conn, db, table, request.args.get("collection"))
        info = describe(conn, collection, pending)
        if query.error or not query.searched:
            return info, []
        if query.mode != "dense" and pending:
            query.error, query.status = _older(db), 503
            return info, []
        if query.id is not None and query.id not in collection:
            raise _Failure(404, f"No item with id {query.id!r} in {table}")
        try:
            if query.id is not None:
                return info, collection.similar_by_id(query.id, query.n, unique=query.unique,
                                                      metadata=query.metadata, min_score=query.min_score)
            return info, collection.similar(query.q, query.n, unique=query.unique, metadata=query.metadata,
                                            min_score=query.min_score, mode=query.mode, vector=vector)
        except EmbedkitError as ex:
            raise _Failure(500, f"{table}: {ex}") from None

    vector = None
    if query.q is not None and not query.error and query.mode != "keyword":
        # The model is asked off Datasette's SQL threads, between two short visits to them.
        info = await db.execute_fn(describe)
        if not (info["pending"] and query.mode == "hybrid"):  # which search() refuses
            vector = await _query_vector(datasette, request, db, table, info, config, query.q)
    info, rows = await db.execute_fn(lambda conn: search(conn, vector))
    if as_json:
        if query.error:
            raise _Failure(query.status, query.error)
        return _json(
            {
                "ok": True,
                "database": db.name,
                "table": table,
                "collection": info["collection"],
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
    # Which collection of the table, in the links: llm keeps all of its in one.
    chosen = info["collection"] if info["llm_id"] is not None else None
    context = {
        "database": db.name,
        "table": table,
        "name": info["collection"],
        "collection": chosen,
        "q": query.q,
        "item_id": query.id,
        "n": query.n,
        "unique": query.unique,
        "filters": query.filters,
        "mode": query.mode,
        "modes": [("dense", "by meaning"), ("keyword", "by keywords"), ("hybrid", "both")][: 3 if info["managed"] else 1],
        "max_n": query.max_n,
        "error": query.error,
        "notice": _older(db) if info["pending"] else None,
        "searched": query.searched,
        "rows": rows,
        "model": info["model"],
        "count": f"{info['count']:,}",
        "action": _similar_url(datasette, db.name, table),
        "json_url": _similar_url(datasette, db.name, table, as_json=True, collection=chosen, q=query.q, id=query.id,
                                 n=query.n, unique=query.unique, filter=query.filters,
                                 mode=None if query.mode == "dense" else query.mode, min_score=query.min_score),
        "row_url": lambda item_id: datasette.urls.row(db.name, table, _row_path(info["llm_id"], item_id)),
        "snippet": _snippet,
    }
    return Response.html(
        await datasette.render_template("embedkit_similar.html", context, request=request,
                                        view_name="embedkit-similar"),
        status=query.status if query.error else 200,
    )


def _snippet(content):
    if not content:
        return ""
    return content if len(content) <= SNIPPET_CHARS else content[:SNIPPET_CHARS].rstrip() + "…"
