"""PDFs fetched by URL from a real HTTP server on 127.0.0.1 (tests/httpserver.py), end to end
through `embedkit embed-multi`: what is stored, conditional re-runs, changed documents, every
way a download can fail, redirects, --sync and re-fetching after a delete."""

import json
import socket

import pytest
import sqlite_utils

import pdfs
from conftest import dump
from embedkit import storage

COLLECTION = "papers"
LATER = "2099-01-01T00:00:00Z"  # what storage.now() says during a re-run, to catch rewritten records
LATER_UNIX = 4070908800  # the same for rows (storage.unix_time())

ALPHA = ["Alpha page one: ternary weights.", "Alpha page two: quantised activations.", "Alpha page three: results."]
BETA = ["Beta page one: sourdough starter.", "Beta page two: proofing times."]
LONG = " ".join(f"Sentence {i} of the long page talks about lattices and graphs." for i in range(1, 26))


def summary(embedded=0, reused=0, updated=0, unchanged=0, failed=0, removed=0):
    text = f"{embedded} embedded, {reused} reused, {updated} updated, {unchanged} unchanged, {failed} failed"
    return text + (f", {removed} removed" if removed else "")


def ids(url, *pages):
    """Expected item ids: one chunk per page unless a page is given as (page, chunks)."""
    found = set()
    for page in pages:
        page, chunks = page if isinstance(page, tuple) else (page, 1)
        found |= {f"{url}#page={page}&chunk={chunk}" for chunk in range(1, chunks + 1)}
    return found


def rows(db_path):
    """The collection's rows by id, metadata parsed ({} before the table exists)."""
    db = sqlite_utils.Database(db_path)
    if COLLECTION not in db.table_names():
        return {}
    found = {}
    for row in db[COLLECTION].rows:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
        found[row["id"]] = row
    return found


def of(stored, url):
    """The rows whose source is url."""
    return {id: row for id, row in stored.items() if row["metadata"]["source"] == url}


def sources(db_path):
    db = sqlite_utils.Database(db_path)
    if storage.SOURCES not in db.table_names():
        return {}
    return {row["source"]: row for row in db[storage.SOURCES].rows_where("collection = ?", [COLLECTION])}


def words(text):
    return " ".join(text.split())


def ok(result, expected):
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stderr == expected + "\n"
    assert result.stdout == ""
    return result


def failed(result, url, reason, expected):
    """Exit 1 with one `Failed:` line for url, then the summary; no traceback anywhere."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == f"Failed: {url}: {reason}\n{expected}\n"
    assert result.stdout == ""
    return result


def conditional(request):
    return {k: request.headers[k] for k in ("If-None-Match", "If-Modified-Since") if k in request.headers}


def gets(server, path):
    return [r for r in server.requests if r.path == path]


@pytest.fixture
def pdf_bytes(tmp_path):
    """pdf_bytes(pages, title=None) -> the bytes of a real text PDF (written by tests/pdfs.py)."""
    folder = tmp_path / "made"
    folder.mkdir()
    counter = iter(range(10**6))

    def make(pages, title=None, maker=pdfs.text_pdf):
        path = folder / f"{next(counter)}.pdf"
        return (maker(path, pages, title) if maker is pdfs.text_pdf else maker(path)).read_bytes()

    return make


@pytest.fixture
def serve(http_server, pdf_bytes):
    """serve(path, pages, title=None, **route options) -> the URL of a text PDF on the server."""

    def route(path, pages, title=None, **options):
        http_server.route(path, pdf_bytes(pages, title), **options)
        return http_server.url + path

    return route


@pytest.fixture
def embed(invoke):
    """embed-multi into `papers` with the letters model, storing the text."""

    def run(*inputs, model=("-m", "test-letters")):
        return invoke("embed-multi", COLLECTION, *inputs, "--store", *model)

    return run


@pytest.fixture
def later(monkeypatch):
    """Call to make every timestamp written from now on LATER."""
    def patch():
        monkeypatch.setattr(storage, "now", lambda: LATER)
        monkeypatch.setattr(storage, "unix_time", lambda: LATER_UNIX)

    return patch


# ---------------------------------------------------------------- 1. fetch and store


@pytest.mark.parametrize("how", ["input", "--pdf"])
@pytest.mark.parametrize("path", ["/papers/alpha.pdf", "/download?id=alpha&format=pdf"], ids=["pdf-path", "query"])
@pytest.mark.parametrize("title", ["Alpha: a paper", None], ids=["title", "untitled"])
def test_fetch_and_store(embed, serve, http_server, db_path, letters, how, path, title):
    url = serve(path, [ALPHA[0], LONG, ALPHA[2]], title, etag="a1", last_modified=1_700_000_000)
    ok(embed(*(["--pdf", url] if how == "--pdf" else [url])), summary(embedded=4))

    stored = rows(db_path)
    assert set(stored) == ids(url, 1, (2, 2), 3)
    for id, row in stored.items():
        page, chunk = int(id.split("#page=")[1].split("&")[0]), int(id.rsplit("chunk=", 1)[1])
        # The URL exactly as given; without a title of its own, the first page's first line.
        expected = {"source": url, "page": page, "chunk": chunk, "title": title or ALPHA[0]}
        assert row["metadata"] == expected
        assert row["content"]
    assert words(stored[f"{url}#page=1&chunk=1"]["content"]) == ALPHA[0]
    assert words(stored[f"{url}#page=3&chunk=1"]["content"]) == ALPHA[2]
    long_page = words(stored[f"{url}#page=2&chunk=1"]["content"] + " " + stored[f"{url}#page=2&chunk=2"]["content"])
    assert "Sentence 1 of" in long_page and "Sentence 25 of" in long_page
    assert letters.calls == 1

    [request] = http_server.requests  # exactly one request: a plain GET
    assert request.method == "GET"
    assert request.path == path
    assert conditional(request) == {}
    assert request.headers["User-Agent"].startswith("embedkit/")

    record = sources(db_path)[url]
    assert record["etag"] == '"a1"'
    assert record["last_modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert record["items"] == 4
    assert record["digest"] and record["split"] == "recursive:1000:100"


# ---------------------------------------------------------------- 2./3. re-runs


@pytest.mark.parametrize(
    "validators, sent",
    [
        ({"etag": "v1"}, {"If-None-Match": '"v1"'}),
        ({"etag": 'W/"weak-1"'}, {"If-None-Match": 'W/"weak-1"'}),
        ({"last_modified": 1_700_000_000}, {"If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"}),
    ],
    ids=["etag", "weak-etag", "last-modified"],
)
def test_rerun_is_a_conditional_request(embed, serve, pdf_bytes, http_server, db_path, letters, validators, sent):
    url = serve("/alpha.pdf", ALPHA, "Alpha", **validators)
    ok(embed(url), summary(embedded=3))
    calls, before = letters.calls, dump(db_path)

    # The document changes on the server, but the server says it has not: a 304 is trusted,
    # so nothing is downloaded, extracted or embedded (the new text never shows up).
    http_server.route("/alpha.pdf", pdf_bytes(BETA, "Beta"), **validators)
    ok(embed(url), summary(unchanged=3))
    assert letters.calls == calls
    assert dump(db_path) == before

    first, second = gets(http_server, "/alpha.pdf")
    assert conditional(first) == {}
    assert conditional(second) == sent


def test_rerun_without_validators_downloads_but_changes_nothing(embed, serve, http_server, db_path, letters, later):
    url = serve("/alpha.pdf", ALPHA, "Alpha")  # neither ETag nor Last-Modified
    ok(embed(url), summary(embedded=3))
    calls, before = letters.calls, rows(db_path)
    record, snapshot = sources(db_path)[url], dump(db_path)

    later()
    ok(embed(url), summary(unchanged=3))
    assert http_server.count("/alpha.pdf") == 2  # downloaded again in full...
    assert conditional(gets(http_server, "/alpha.pdf")[1]) == {}
    assert letters.calls == calls  # ...but the same bytes: no model call
    assert rows(db_path) == before
    assert all(row["updated"] != LATER_UNIX for row in rows(db_path).values())
    assert sources(db_path)[url] == record
    assert dump(db_path) == snapshot


@pytest.mark.parametrize("first", ["v1", None], ids=["etag-changed", "etag-added"])
def test_new_validators_for_identical_content_are_recorded(embed, pdf_bytes, http_server, db_path, letters, first):
    body = pdf_bytes(ALPHA, "Alpha")
    http_server.route("/alpha.pdf", body, etag=first)
    url = http_server.url + "/alpha.pdf"
    ok(embed(url), summary(embedded=3))

    http_server.route("/alpha.pdf", body, etag="v2")  # e.g. redeployed: same bytes, new ETag
    ok(embed(url), summary(unchanged=3))
    ok(embed(url), summary(unchanged=3))
    assert conditional(gets(http_server, "/alpha.pdf")[2]) == {"If-None-Match": '"v2"'}
    assert sources(db_path)[url]["etag"] == '"v2"'


def test_other_chunking_fetches_in_full(embed, serve, http_server, db_path, letters):
    """A source split another way before is read again in full, not asked for conditionally."""
    url = serve("/alpha.pdf", ALPHA, "Alpha", etag="a1")
    ok(embed(url), summary(embedded=3))
    result = embed(url, "--chunk-size", "20", "--chunk-overlap", "0")
    assert result.exit_code == 0
    assert result.stderr.splitlines()[0].startswith("Chunking of 'papers' changes from ")
    assert result.stderr.splitlines()[1:] == [summary(embedded=7)]  # chunk 1 of each page is overwritten
    assert conditional(gets(http_server, "/alpha.pdf")[1]) == {}
    stored = rows(db_path)
    assert set(stored) == ids(url, (1, 2), (2, 3), (3, 2))
    assert sources(db_path)[url]["split"] == "recursive:20:0"
    assert sources(db_path)[url]["items"] == 7
    ok(embed(url, "--chunk-size", "20", "--chunk-overlap", "0"), summary(unchanged=7))
    assert conditional(gets(http_server, "/alpha.pdf")[2]) == {"If-None-Match": '"a1"'}
    ok(embed(url), summary(unchanged=7))  # the chunking is remembered
    assert conditional(gets(http_server, "/alpha.pdf")[3]) == {"If-None-Match": '"a1"'}


# ---------------------------------------------------------------- 4. the document changes


def test_changed_pdf_replaces_its_chunks(embed, serve, pdf_bytes, http_server, db_path, letters, tmp_path, later):
    alpha = serve("/alpha.pdf", ALPHA, "Alpha", etag="v1")
    beta = serve("/beta.pdf", BETA, "Beta", etag="b1")
    local = str(pdfs.text_pdf(tmp_path / "local.pdf", ["A local gamma page."], "Gamma"))
    ok(embed(alpha, beta, local), summary(embedded=6))
    before = rows(db_path)
    old_digest = sources(db_path)[alpha]["digest"]
    calls = letters.calls

    # Page 1 stays, page 2 is rewritten, page 3 is gone.
    http_server.route("/alpha.pdf", pdf_bytes([ALPHA[0], "Alpha page two, revised: binary weights."], "Alpha"),
                      etag="v2")
    later()
    ok(embed(alpha, beta, local), summary(embedded=1, unchanged=1 + 2 + 1, removed=1))
    assert letters.calls == calls + 1  # one batch, for the one new chunk

    stored = rows(db_path)
    assert set(of(stored, alpha)) == ids(alpha, 1, 2)
    assert f"{alpha}#page=3&chunk=1" not in stored
    assert words(stored[f"{alpha}#page=2&chunk=1"]["content"]) == "Alpha page two, revised: binary weights."
    assert stored[f"{alpha}#page=2&chunk=1"]["updated"] == LATER_UNIX
    assert stored[f"{alpha}#page=1&chunk=1"] == before[f"{alpha}#page=1&chunk=1"]  # unchanged chunk untouched
    assert not any("quantised" in row["content"] or "results" in row["content"] for row in of(stored, alpha).values())
    for other in (beta, local):  # other sources untouched
        assert of(stored, other) == of(before, other)
        assert of(stored, other)

    record = sources(db_path)[alpha]
    assert (record["etag"], record["items"], record["updated"]) == ('"v2"', 2, LATER)
    assert record["digest"] != old_digest
    assert conditional(gets(http_server, "/alpha.pdf")[1]) == {"If-None-Match": '"v1"'}
    assert conditional(gets(http_server, "/beta.pdf")[1]) == {"If-None-Match": '"b1"'}


def test_changed_pdf_that_grows(embed, serve, pdf_bytes, http_server, db_path, letters):
    alpha = serve("/alpha.pdf", ALPHA[:1], "Alpha", last_modified=1_700_000_000)
    ok(embed(alpha), summary(embedded=1))
    http_server.route("/alpha.pdf", pdf_bytes(ALPHA, "Alpha, 2nd edition"), last_modified=1_800_000_000)
    # The title is in every chunk's metadata: page 1's row is rewritten without a model call.
    ok(embed(alpha), summary(embedded=2, updated=1))
    stored = rows(db_path)
    assert set(stored) == ids(alpha, 1, 2, 3)
    assert {row["metadata"]["title"] for row in stored.values()} == {"Alpha, 2nd edition"}
    assert sources(db_path)[alpha]["last_modified"] == "Fri, 15 Jan 2027 08:00:00 GMT"


# ---------------------------------------------------------------- 5. failures


def _closed_port_url(server, tmp_path, pdf_bytes):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/paper.pdf"


def _route(path, make_body, **options):
    def setup(server, tmp_path, pdf_bytes):
        server.route(path, make_body(pdf_bytes, tmp_path), **options)
        return server.url + path

    return setup


_PADDED = lambda pdf_bytes, tmp_path: pdf_bytes(ALPHA) + b"%" + b"x" * (3 * 2**19)  # noqa: E731  (1.5 MiB)


def _redirect_loop(server, tmp_path, pdf_bytes):
    server.redirect("/loop.pdf", "/loop.pdf")
    return server.url + "/loop.pdf"


FAILURES = [
    ("http-404", lambda server, tmp_path, pdf_bytes: server.url + "/missing.pdf", "HTTP 404 Not Found", {}),
    ("http-500", _route("/broken.pdf", lambda p, t: b"oops", status=500, content_type="text/plain"),
     "HTTP 500 Internal Server Error", {}),
    ("html-page", _route("/login.pdf", lambda p, t: pdfs.not_a_pdf(t / "login.html").read_bytes(),
                         content_type="text/html; charset=utf-8"),
     "not a PDF (it does not start with %PDF-; the server sent text/html)", {}),
    ("zero-bytes", _route("/empty.pdf", lambda p, t: b""), "empty file (0 bytes)", {}),
    ("stalls-before-answering", _route("/slow.pdf", lambda p, t: p(ALPHA), delay=10),
     "no answer within 0.5 s", {"TIMEOUT": 0.5}),
    ("stalls-mid-body", _route("/slow.pdf", _PADDED, chunk_delay=10), "no answer within 0.5 s", {"TIMEOUT": 0.5}),
    ("too-large-announced", _route("/huge.pdf", _PADDED),
     "larger than the 1.0 MiB download limit (1.5 MiB)", {"MAX_BYTES": 2**20}),
    ("too-large-chunked", _route("/huge.pdf", _PADDED, chunked=True),
     "larger than the 1.0 MiB download limit", {"MAX_BYTES": 2**20}),
    ("connection-refused", _closed_port_url, "cannot fetch: [Errno 111] Connection refused", {}),
    ("redirect-loop", _redirect_loop, "more than 10 redirects", {}),
    ("encrypted", _route("/secret.pdf", lambda p, t: pdfs.encrypted_pdf(t / "secret.pdf").read_bytes()),
     "encrypted: it needs a password to open", {}),
]


@pytest.mark.parametrize("setup, reason, settings", [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_failed_url(embed, serve, http_server, pdf_bytes, db_path, tmp_path, monkeypatch, letters,
                    setup, reason, settings):
    for name, value in settings.items():
        monkeypatch.setattr(f"embedkit.sources.url.{name}", value)
    good = serve("/good.pdf", BETA, "Beta")
    local = str(pdfs.text_pdf(tmp_path / "local.pdf", ["A local gamma page."]))
    bad = setup(http_server, tmp_path, pdf_bytes)

    failed(embed(good, bad, local), bad, reason, summary(embedded=3, failed=1))
    stored = rows(db_path)
    assert set(stored) == ids(good, 1, 2) | ids(local, 1)  # the others are stored
    assert not any(id.startswith(bad) for id in stored)
    assert set(sources(db_path)) == {good, local}
    if reason == "more than 10 redirects":
        assert http_server.count("/loop.pdf") == 11


@pytest.mark.parametrize("option", [False, True], ids=["url-input", "--pdf"])
def test_failed_url_alone_stores_nothing(embed, http_server, db_path, option):
    bad = http_server.url + "/missing.pdf"
    failed(embed(*(["--pdf", bad] if option else [bad])), bad, "HTTP 404 Not Found", summary(failed=1))
    assert rows(db_path) == {} and sources(db_path) == {}


def test_unasked_304_is_a_failure(embed, serve, http_server, db_path):
    good = serve("/good.pdf", BETA, "Beta")
    http_server.handler("/odd.pdf", lambda request: (304, {}, b""))
    bad = http_server.url + "/odd.pdf"
    result = embed(good, bad)
    assert result.exit_code == 1
    assert "Traceback" not in result.stdout + result.stderr
    failure, totals = result.stderr.splitlines()
    assert failure.startswith(f"Failed: {bad}: ") and "304" in failure
    assert totals == summary(embedded=2, failed=1)
    assert set(rows(db_path)) == ids(good, 1, 2)


@pytest.mark.parametrize("bad", ["http://127.0.0.1:80x/paper.pdf", "http://a..b/paper.pdf"],
                         ids=["bad-port", "empty-host-label"])
def test_malformed_url_is_a_failure(embed, serve, db_path, bad):
    good = serve("/good.pdf", BETA, "Beta")
    result = embed(good, bad)
    assert result.exit_code == 1
    assert "Traceback" not in result.stdout + result.stderr
    failure, totals = result.stderr.splitlines()
    assert failure.startswith(f"Failed: {bad}: cannot fetch: ")
    assert totals == summary(embedded=2, failed=1)
    assert set(rows(db_path)) == ids(good, 1, 2)


# ---------------------------------------------------------------- 6. redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("absolute", [False, True], ids=["relative-location", "absolute-location"])
def test_redirect_is_followed_and_source_stays_as_given(embed, serve, http_server, db_path, letters, status, absolute):
    target = serve("/v2/paper.pdf", ALPHA, "Alpha", etag="v2")
    http_server.redirect("/latest.pdf", "/v1/paper.pdf", status=status)
    http_server.redirect("/v1/paper.pdf", target if absolute else "/v2/paper.pdf", status=status)
    url = http_server.url + "/latest.pdf"

    ok(embed(url), summary(embedded=3))
    stored = rows(db_path)
    assert set(stored) == ids(url, 1, 2, 3)
    assert {row["metadata"]["source"] for row in stored.values()} == {url}
    assert set(sources(db_path)) == {url}
    assert [r.path for r in http_server.requests] == ["/latest.pdf", "/v1/paper.pdf", "/v2/paper.pdf"]

    # The ETag of the final response is sent again (through the redirects), and answered with 304.
    calls = letters.calls
    ok(embed(url), summary(unchanged=3))
    assert letters.calls == calls
    assert conditional(gets(http_server, "/v2/paper.pdf")[1]) == {"If-None-Match": '"v2"'}


# ---------------------------------------------------------------- 7. --sync


def test_sync_removes_a_dropped_url(embed, serve, http_server, db_path, letters):
    alpha = serve("/alpha.pdf", ALPHA, "Alpha", etag="a1")
    beta = serve("/beta.pdf", BETA, "Beta", etag="b1")
    ok(embed(alpha, beta, "--sync"), summary(embedded=5))
    before = rows(db_path)

    ok(embed(alpha, "--sync"), summary(unchanged=3, removed=2))
    assert rows(db_path) == of(before, alpha)
    assert set(sources(db_path)) == {alpha}
    assert http_server.count("/beta.pdf") == 1  # not fetched again

    # Back in the command: read again in full (nothing known about it any more).
    ok(embed(alpha, beta, "--sync"), summary(embedded=2, unchanged=3))
    assert conditional(gets(http_server, "/beta.pdf")[1]) == {}
    assert set(rows(db_path)) == set(before)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "no-sync"])
def test_url_that_fails_now_keeps_its_chunks(embed, serve, pdf_bytes, http_server, db_path, letters, sync):
    alpha = serve("/alpha.pdf", ALPHA, "Alpha", etag="a1")
    beta = serve("/beta.pdf", BETA, "Beta", etag="b1")
    ok(embed(alpha, beta), summary(embedded=5))
    before, records = rows(db_path), sources(db_path)

    http_server.route("/beta.pdf", b"oops", status=500, content_type="text/plain")
    failed(embed(alpha, beta, *(["--sync"] if sync else [])), beta, "HTTP 500 Internal Server Error",
           summary(unchanged=3, failed=1))
    assert rows(db_path) == before
    assert sources(db_path) == records

    # The server recovers: its ETag is still known, so a 304 suffices.
    serve("/beta.pdf", BETA, "Beta", etag="b1")
    ok(embed(alpha, beta, *(["--sync"] if sync else [])), summary(unchanged=5))
    assert conditional(gets(http_server, "/beta.pdf")[2]) == {"If-None-Match": '"b1"'}
    assert rows(db_path) == before


# ---------------------------------------------------------------- 8. delete, then fetch again


@pytest.mark.parametrize(
    "filters, deleted, rerun",
    [
        ([], 3, summary(embedded=3, unchanged=2)),  # beta: 2 unchanged
        (["--filter", "page=2"], 1, summary(embedded=1, unchanged=2 + 2)),
    ],
    ids=["all-chunks", "one-page"],
)
def test_rerun_after_delete_fetches_in_full(invoke, embed, serve, http_server, db_path, letters, filters, deleted,
                                            rerun):
    alpha = serve("/alpha.pdf", ALPHA, "Alpha", etag="a1")
    beta = serve("/beta.pdf", BETA, "Beta", etag="b1")
    ok(embed(alpha, beta), summary(embedded=5))
    before, records = rows(db_path), sources(db_path)

    ok(invoke("delete", COLLECTION, "--filter", f"source={alpha}", *filters), f"Deleted {deleted} item{'s' * (deleted > 1)}")
    gone = {f"{alpha}#page=2&chunk=1"} if filters else set(of(before, alpha))
    assert set(rows(db_path)) == set(before) - gone
    assert (alpha in sources(db_path)) == bool(filters)  # forgotten once none of its items is left

    ok(embed(alpha, beta), rerun)
    first, second = gets(http_server, "/alpha.pdf")
    assert conditional(second) == {}  # no If-None-Match: downloaded in full
    assert conditional(gets(http_server, "/beta.pdf")[1]) == {"If-None-Match": '"b1"'}
    stored = rows(db_path)
    assert set(stored) == set(before)
    for id, row in stored.items():
        assert {k: row[k] for k in ("embedding", "content", "metadata")} == {
            k: before[id][k] for k in ("embedding", "content", "metadata")
        }
    assert sources(db_path)[alpha]["etag"] == '"a1"'
    assert sources(db_path)[alpha]["digest"] == records[alpha]["digest"]


# ---------------------------------------------------------------- the real model


def test_url_fetched_paper_is_searchable(invoke, embed, serve, db_path, minilm):
    bitnet = serve(
        "/bitnet.pdf",
        ["BitNet: large language models with ternary weights. Every weight is -1, 0 or 1, which cuts "
         "memory and energy use while matching full-precision perplexity.",
         "Training uses quantisation-aware updates of the latent full-precision weights."],
        "BitNet b1.58",
        etag="bitnet",
    )
    bread = serve(
        "/bread.pdf",
        ["Sourdough bread: feed the starter with flour and water, then let the dough rise overnight.",
         "Bake in a hot Dutch oven until the crust is deep brown."],
        "Baking bread",
    )
    ok(embed(bitnet, bread, model=()), summary(embedded=4))

    result = invoke("similar", COLLECTION, "-c", "quantized neural network weights", "--unique", "source")
    assert result.exit_code == 0, result.stderr
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [hit["metadata"]["source"] for hit in hits] == [bitnet, bread]  # one per paper, best first
    assert hits[0]["id"].startswith(bitnet + "#page=")
    assert hits[0]["metadata"]["title"] == "BitNet b1.58"
    assert hits[0]["score"] > hits[1]["score"]
