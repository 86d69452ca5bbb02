"""The Datasette plugin on the open web: what an anonymous visitor can and cannot make it do.

A fake embedding service on 127.0.0.1 (tests/embedserver.py) stands for a paid one and counts
every request, so each test can say how many calls a visitor caused: none, unless allowed.
"""

import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest

import embedkit
from datasettes import DATASETTE_1, config_option, datasette_command, get_json, make, request, sql, strict_json
from embedkit import config, migrations, models
from embedserver import EmbedServer

pytestmark = pytest.mark.datasette

KEY = "sk-test-0123456789abcdef"  # the owner's key: never in any output
ITEMS = [("a", "rye bread with caraway"), ("b", "sourdough starter"), ("c", "backing up sqlite"),
         ("d", "datasette publishes sqlite"), ("e", "bread and butter")]


@pytest.fixture
def server():
    with EmbedServer(keys=[KEY]) as running:
        yield running


@pytest.fixture
def remote(server, monkeypatch, user_dir):
    """A keyed HTTP model, 'paid', configured as its owner would."""
    monkeypatch.setenv("PAID_KEY", KEY)
    models.add("paid", {"api": "openai", "base_url": server.openai_url, "model_name": "fake", "key_env": "PAID_KEY",
                        "retries": 0})
    return models.get_model("paid")


def build(path, model, items=ITEMS, name="docs"):
    with embedkit.Database(path) as db:
        db.create_collection(name, model=model).embed_multi([embedkit.Item(i, t) for i, t in items], store=True)
    return path


@pytest.fixture
def paid_db(tmp_path, remote, server):
    path = build(tmp_path / "paid.db", "paid")
    server.reset_counts()
    return path


def plugin(**settings):
    return {"plugins": {"embedkit": settings}}


# Which models visitors can make work


@pytest.mark.parametrize("query", [
    "select embedkit_embed('paid', 'x')",
    "select embedkit_query('docs', 'x')",
    "select embedkit_embed('openai/text-embedding-3-small', 'x')",
    "select embedkit_embed('ollama/nomic-embed-text', 'x')",
    "select id from docs order by embedkit_cosine(embedding, embedkit_query('docs', :q)) desc",
])
def test_sql_cannot_call_a_service_the_owner_did_not_allow(paid_db, server, query):
    ds = make([paid_db])
    assert sql(ds, "paid", query, status=400, q="bread")["error"] == "user-defined function raised exception"
    assert server.calls == []


def test_sql_cannot_load_a_model_from_the_servers_disk(tmp_path, letters):
    path = build(tmp_path / "local.db", "test-letters")
    directory = tmp_path / "some-model"
    directory.mkdir()
    ds = make([path])
    for name in (str(directory), str(tmp_path / "missing")):
        assert sql(ds, "local", f"select embedkit_embed('{name}', 'x')", status=400)
    assert sql(ds, "local", "select embedkit_dims(embedkit_embed('test-letters', 'x')) as d")["rows"] == [{"d": 8}]


def test_allowed_service_is_called_once_per_text_from_sql(paid_db, server):
    ds = make([paid_db], plugin(models=["paid"]))
    canned = ("select id, embedkit_cosine(embedding, embedkit_query('docs', :q)) as score "
              "from docs order by score desc limit 3")
    rows = sql(ds, "paid", canned, q="rye bread")["rows"]
    assert rows[0]["id"] == "a" and len(server.calls) == 1  # one request for five rows
    sql(ds, "paid", canned, q="rye bread")
    assert len(server.calls) == 1  # the same text again: from the cache


def test_a_statement_may_make_only_a_few_model_calls(paid_db, server):
    ds = make([paid_db], plugin(models=["paid"], sql_model_calls=3))
    query = "select embedkit_embed('paid', content) from docs"
    assert sql(ds, "paid", query, status=400)["error"] == "user-defined function raised exception"
    assert len(server.calls) == 3


def test_the_canned_query_of_the_docs_makes_one_request(paid_db, server):
    ds = make([paid_db], {**plugin(models=["paid"]), "databases": {"paid": {"queries": {"search": {
        "sql": "select id, round(embedkit_cosine(embedding, embedkit_query('docs', :q)), 3) as score "
               "from docs order by score desc limit 3"}}}}})
    data = get_json(ds, "/paid/search.json?_shape=objects&q=sourdough")
    assert data["rows"][0]["id"] == "b"
    assert len(server.calls) == 1


def test_searching_by_text_with_a_service_needs_the_owners_leave(paid_db, server):
    denied = make([paid_db])
    data = get_json(denied, "/paid/docs/-/similar.json?q=bread", status=403)
    assert "calls a service" in data["error"] and server.calls == []
    assert get_json(denied, "/paid/docs/-/similar.json?id=a")["rows"]  # by id: no model call
    # allowed for this table only
    allowed = make([paid_db], {"databases": {"paid": {"tables": {"docs": plugin(models=["paid"])}}}})
    assert get_json(allowed, "/paid/docs/-/similar.json?q=rye")["rows"][0]["id"] == "a"
    assert len(server.calls) == 1


def test_the_budget_answers_429(paid_db, server):
    ds = make([paid_db], plugin(models=["paid"], calls_per_minute=100, calls_per_minute_per_ip=2))
    for q in ("one", "two", "one"):  # the repeat is cached: no call
        get_json(ds, f"/paid/docs/-/similar.json?q={q}")
    response = request(ds, "/paid/docs/-/similar.json?q=three")
    assert response.status_code == 429
    assert strict_json(response.text)["error"].startswith("searches with model paid are limited to 2 a minute")
    assert 1 <= int(response.headers["retry-after"]) <= 60
    page = request(ds, "/paid/docs/-/similar?q=four")
    assert page.status_code == 429 and "limited to 2 a minute for each visitor" in page.text
    assert len(server.calls) == 2
    instance = make([paid_db], plugin(models=["paid"], calls_per_minute=1))
    get_json(instance, "/paid/docs/-/similar.json?q=five")
    assert "limited to 1 a minute on this server" in get_json(instance, "/paid/docs/-/similar.json?q=six", 429)["error"]
    assert len(server.calls) == 3


def test_startup_calls_no_service(paid_db, server):
    ds = make([paid_db], plugin(models=["paid"]))
    asyncio.run(ds.invoke_startup())
    get_json(ds, "/paid/docs/-/similar.json?id=a")
    assert server.calls == []


# Time limits


def test_a_stalled_service_fails_in_time_while_tables_answer(paid_db, server):
    server.fail("stall", times=float("inf"), seconds=20)
    ds = make([paid_db], plugin(models=["paid"]), settings={"sql_time_limit_ms": 500})

    async def timed(path):
        started = time.monotonic()
        response = await ds.client.get(path)
        return response.status_code, response.text, time.monotonic() - started

    async def scenario():
        searches = [asyncio.create_task(timed(f"/paid/docs/-/similar.json?q=stall+{i}")) for i in range(3)]
        await asyncio.sleep(0.05)
        table = await timed("/paid/docs.json")
        return table, await asyncio.gather(*searches)

    (status, _, took), searches = asyncio.run(scenario())
    assert status == 200 and took < 2, took
    for status, text, took in searches:
        data = strict_json(text)
        assert status == 503 and took < 3, (status, data, took)
        assert "model paid" in data["error"] and ("500 ms" in data["error"] or "not answered" in data["error"])
    # SQL: the same limit, and the SQL thread is free again within it
    started = time.monotonic()
    assert sql(ds, "paid", "select embedkit_embed('paid', 'stalled sql')", status=400)
    assert time.monotonic() - started < 3


def test_a_late_answer_is_kept_for_the_next_search(paid_db, server):
    server.latency = 1.0
    ds = make([paid_db], plugin(models=["paid"]), settings={"sql_time_limit_ms": 300})
    assert "gave no answer within 300 ms" in get_json(ds, "/paid/docs/-/similar.json?q=slow", 503)["error"]
    assert "not answered an earlier request" in get_json(ds, "/paid/docs/-/similar.json?q=other", 503)["error"]
    time.sleep(1.5)
    assert get_json(ds, "/paid/docs/-/similar.json?q=slow")["rows"]
    assert len(server.calls) == 1


def test_large_vectors_and_non_finite_numbers_are_refused(tmp_path, letters):
    ds = make([build(tmp_path / "local.db", "test-letters")], plugin(max_dimensions=16))
    for query in ("select length(embedkit_decode(zeroblob(100000000)))",
                  "select embedkit_dims(zeroblob(68))",
                  "select embedkit_cosine(zeroblob(400), zeroblob(400))",
                  "select embedkit_encode('[' || substr(replace(hex(zeroblob(600)), '00', '1,'), 1, 1000) || '1]')",
                  "select embedkit_encode('[NaN, 1]')",
                  "select embedkit_encode('[1e39]')",
                  "select embedkit_cosine(x'0000c07f0000803f', x'0000803f0000803f')"):
        started = time.monotonic()
        assert sql(ds, "local", query, status=400), query
        assert time.monotonic() - started < 2, query
    assert sql(ds, "local", "select embedkit_dims(zeroblob(64)) as d")["rows"] == [{"d": 16}]


# Datasette's own rules


def test_max_returned_rows_nan_and_filters(tmp_path, letters):
    path = build(tmp_path / "local.db", "test-letters", [(f"i{n:02d}", "a e i o u " * (n % 7 + 1)) for n in range(30)])
    ds = make([path], settings={"max_returned_rows": 5})
    assert get_json(ds, "/local/docs/-/similar.json?id=i01&n=5")["n"] == 5
    assert get_json(ds, "/local/docs/-/similar.json?id=i01&n=100", 400)["error"] == (
        "n must be a whole number from 1 to 5, not '100'")
    for value in ("NaN", "nan", "inf", "-Infinity"):
        response = request(ds, f"/local/docs/-/similar.json?id=i01&min_score={value}")
        assert response.status_code == 400
        assert strict_json(response.text)["error"] == f"min_score must be a finite number, not {value!r}"
    filters = "&".join(f"filter=k{i}=v" for i in range(21))
    assert get_json(ds, f"/local/docs/-/similar.json?id=i01&{filters}", 400)["error"] == (
        "21 filters; at most 20 may be given")
    assert get_json(ds, "/local/docs/-/similar.json?id=i01&" + "&".join(f"filter=k{i}=v" for i in range(20)))


# Permissions


def both(tmp_path, letters, rules):
    private = build(tmp_path / "priv.db", "test-letters", name="secret")
    public = build(tmp_path / "pub.db", "test-letters", name="open")
    for path in (private, public):
        with embedkit.Database(path) as db:
            db.collection(db.collection_names()[0]).compute_related(n=2)
    return make([private, public], {"databases": rules})


def routes(database, collection, sql_too=True):
    paths = [f"/{database}", f"/{database}.json", f"/{database}/{collection}", f"/{database}/{collection}.json",
             f"/{database}/{collection}/a", f"/{database}/{collection}/-/similar?id=a",
             f"/{database}/{collection}/-/similar.json?id=a", f"/{database}/{collection}/-/similar.json?q=bread",
             f"/{database}/{collection}/-/related.json?id=a"]
    if sql_too:
        from datasettes import sql_path

        paths.append(sql_path(database, f"select id from {collection}"))
    return paths


@pytest.mark.parametrize("denied, allowed", [("priv", "pub"), ("pub", "priv")])
def test_two_databases_with_opposite_permissions(tmp_path, letters, denied, allowed):
    ds = both(tmp_path, letters, {denied: {"allow": False}, allowed: {"allow": True}})
    collections = {"priv": "secret", "pub": "open"}
    for path in routes(denied, collections[denied]):
        assert request(ds, path).status_code == 403, path
    for path in routes(allowed, collections[allowed]):
        response = request(ds, path)
        assert response.status_code == 200, (path, response.text[:300])
    hidden = {t["name"]: t["hidden"] for t in get_json(ds, f"/{allowed}.json")["tables"]}
    assert hidden["_embedkit_collections"] is True and hidden[collections[allowed]] is False


def test_a_table_rule_does_not_cover_sql_but_execute_sql_does(tmp_path, letters):
    rules = {"priv": {"tables": {"secret": {"allow": False}}}}
    ds = both(tmp_path, letters, rules)
    for path in routes("priv", "secret", sql_too=False):
        if path not in ("/priv", "/priv.json"):
            assert request(ds, path).status_code == 403, path
    assert sql(ds, "priv", "select id from secret")["rows"]  # Datasette's rule: SQL reads any table
    (tmp_path / "again").mkdir()
    closed = both(tmp_path / "again", letters, {"priv": {"tables": {"secret": {"allow": False}}, "allow_sql": False}})
    from datasettes import sql_path

    assert request(closed, sql_path("priv", "select id from secret")).status_code == 403
    assert get_json(closed, "/pub/open/-/similar.json?id=a")["rows"]


# Secrets


def test_no_key_in_a_traceback_of_a_failed_call(remote, server):
    server.fail(500, times=float("inf"))
    with pytest.raises(embedkit.EmbedkitError) as failure:
        remote.embed(["x"])
    import traceback

    text = "".join(traceback.TracebackException.from_exception(failure.value, capture_locals=True).format())
    assert "_embed" in text and KEY not in text
    rich = pytest.importorskip("rich.traceback")
    from rich.console import Console

    console = Console(record=True, width=200, file=open(os.devnull, "w"))
    console.print(rich.Traceback.from_exception(type(failure.value), failure.value, failure.value.__traceback__,
                                                show_locals=True))
    assert "Secret('***')" in console.export_text() and KEY not in console.export_text()
    assert repr(config.get_key(None, "PAID_KEY")) == "Secret('***')"


def test_the_key_never_appears_in_the_servers_output(tmp_path, server, remote, user_dir):
    path = build(tmp_path / "paid.db", "paid")
    options = config_option(tmp_path / "config.json", plugin(models=["paid"]))
    server.fail(401, times=1, message=f"Incorrect API key provided: {KEY}")
    server.fail(500, times=1)
    server.fail("stall", times=1, seconds=3)
    outputs = []
    env = {"EMBEDKIT_USER_DIR": str(user_dir), "PAID_KEY": KEY}
    for get in ("/paid/docs/-/similar.json?q=refused", "/paid/docs/-/similar?q=broken",
                "/paid/docs/-/similar.json?q=stalled", "/paid/-/query.json?sql=select+embedkit_embed('paid','x')"
                if DATASETTE_1 else "/paid.json?sql=select+embedkit_embed('paid','x')"):
        result = datasette_command(str(path), *options, "--setting", "sql_time_limit_ms", "1000", "--get", get,
                                   cwd=tmp_path, env=env)
        outputs.append(result.stdout + result.stderr)
    assert len(server.calls) >= 4
    assert any("was refused" in output for output in outputs), outputs
    for output in outputs:
        assert KEY not in output and KEY[3:15] not in output, output


# Databases as they are published


def older(path):
    """path as an older embedkit left it: the keyword index and related tables not made yet."""
    conn = sqlite3.connect(path)
    with conn:
        for name, in conn.execute("select name from sqlite_master where type = 'trigger' and name like '%fts%'"):
            conn.execute(f'drop trigger "{name}"')
        conn.execute("drop table _embedkit_docs_fts")
        conn.execute("drop table _embedkit_related")
        conn.execute("drop table _embedkit_related_items")
        conn.execute(f"delete from {migrations.TABLE} where name in ('m003_related', 'm004_fulltext')")
    conn.execute("pragma journal_mode = delete")
    conn.close()


def test_an_older_database_is_served_as_it_is(tmp_path, letters):
    path = build(tmp_path / "old.db", "test-letters")
    older(path)
    before = path.read_bytes()
    ds = make([path])
    assert [row["id"] for row in get_json(ds, "/old/docs/-/similar.json?id=a&n=2")["rows"]]
    assert get_json(ds, "/old/docs/-/similar.json?q=bread")["rows"]
    data = get_json(ds, "/old/docs/-/similar.json?q=bread&mode=keyword", 503)
    assert "made by an older embedkit" in data["error"] and "embedkit migrate -d" in data["error"]
    assert "embedkit migrate -d" in get_json(ds, "/old/docs/-/related.json?id=a", 503)["error"]
    page = request(ds, "/old/docs/-/similar?id=a")
    assert page.status_code == 200 and "made by an older embedkit" in page.text
    assert path.read_bytes() == before  # never migrated, never written
    assert not Path(str(path) + "-wal").exists()


def test_embedkit_migrate_upgrades_it(tmp_path, letters, invoke):
    path = build(tmp_path / "old.db", "test-letters")
    older(path)
    result = invoke("migrate", "-d", path)
    assert result.output == f"{path}: applied 2 upgrades: m003_related, m004_fulltext\n"
    assert invoke("migrate", "-d", path).output == f"{path} is up to date\n"


@pytest.fixture
def site(tmp_path, remote, server):
    """A folder as `datasette publish` would ship it: a good database, an older one, one in WAL
    mode, one that is not a database at all; then made read-only, and readable by anyone."""
    folder = Path(tempfile.mkdtemp(prefix="embedkit-site-"))
    folder.chmod(0o755)
    build(folder / "good.db", "paid")
    build(folder / "old.db", "paid")
    older(folder / "old.db")
    build(folder / "wal.db", "paid")  # embedkit writes in WAL mode
    for name in ("good.db", "wal.db"):  # as embedkit left them: WAL mode, no -wal or -shm file
        assert not (folder / (name + "-shm")).exists()
        assert _journal_mode(folder / name) == "wal"
    (folder / "notes.db").write_text("not a database\n")
    (folder / "good.db").chmod(0o444)
    folder.chmod(0o555)
    server.reset_counts()
    yield folder
    folder.chmod(0o755)
    shutil.rmtree(folder)
    shutil.rmtree(folder.parent / (folder.name + "-settings"), ignore_errors=True)


def _journal_mode(path):
    # The file header's read and write versions are 2 in WAL mode, 1 otherwise.
    return "wal" if path.read_bytes()[18:20] == b"\x02\x02" else "not wal"


def run_site(site, user_dir, *args, get):
    """`datasette ... --get` in site, as a user who cannot write there (nobody, when the tests
    run as root, who can write anywhere)."""
    settings = site.parent / (site.name + "-settings")
    if not settings.exists():
        shutil.copytree(user_dir, settings)
        for path in (settings, *settings.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
    env = {"EMBEDKIT_USER_DIR": str(settings), "PAID_KEY": KEY}
    return datasette_command(*args, "--get", get, cwd=site, env=env, user=65534)


def test_read_only_files_and_folders_are_served_without_writing(site, user_dir, server):
    if DATASETTE_1:
        pytest.skip("Datasette 1.0 stops at a file that is not a database before any plugin runs")
    before = {p.name: p.read_bytes() for p in site.iterdir()}
    for database in ("good", "old", "wal"):
        result = run_site(site, user_dir, "good.db", "old.db", "wal.db", "notes.db",
                          get=f"/{database}/docs/-/similar.json?id=a&n=2")
        assert result.returncode == 0, result.stdout + result.stderr
        rows = json.loads(result.stdout)["rows"]
        assert len(rows) == 2 and "a" not in [row["id"] for row in rows]
    assert "not serving notes.db: file is not a database" in result.stderr
    for name in ("good.db", "wal.db"):
        assert f"{name} is in WAL mode in a folder this server cannot write to" in result.stderr
    assert {p.name: p.read_bytes() for p in site.iterdir()} == before
    assert server.calls == []


def test_immutable_databases_as_datasette_publish_serves_them(site, user_dir, server):
    result = run_site(site, user_dir, "-i", "good.db", "-i", "old.db", "-i", "wal.db",
                      "--setting", "sql_time_limit_ms", "20000",
                      *config_option(site.parent / (site.name + ".json"), plugin(models=["paid"])),
                      get="/old/docs/-/similar.json?q=bread&n=2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["rows"][0]["id"] in ("a", "e")
    result = run_site(site, user_dir, "-i", "wal.db", get="/wal/docs/-/similar.json?id=a&n=2")
    assert result.returncode == 0 and json.loads(result.stdout)["rows"], result.stderr
