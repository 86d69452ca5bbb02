"""The test HTTP server in tests/httpserver.py, exercised with httpx."""

import time

import httpx
import pytest

from httpserver import Server, http_server  # noqa: F401

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 10


def test_serves_body_and_headers(http_server):
    http_server.route("/doc.pdf", PDF, etag="v1", headers={"X-Extra": "yes"})
    r = httpx.get(http_server.url + "/doc.pdf")
    assert r.status_code == 200
    assert r.content == PDF
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-length"] == str(len(PDF))
    assert r.headers["etag"] == '"v1"'
    assert r.headers["x-extra"] == "yes"

    head = httpx.head(http_server.url + "/doc.pdf")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(PDF))


def test_query_string_routes(http_server):
    http_server.route("/doc", b"plain")
    http_server.route("/doc?v=2", b"v2")
    assert httpx.get(http_server.url + "/doc?v=1").content == b"plain"
    assert httpx.get(http_server.url + "/doc?v=2").content == b"v2"
    assert http_server.count("/doc") == 2
    assert http_server.count("/doc?v=2") == 1


def test_unknown_path_is_404(http_server):
    r = httpx.get(http_server.url + "/missing.pdf")
    assert r.status_code == 404
    assert b"/missing.pdf" in r.content
    assert http_server.count("/missing.pdf") == 1


def test_if_none_match_gets_304(http_server):
    http_server.route("/doc.pdf", PDF, etag="v1")
    r = httpx.get(http_server.url + "/doc.pdf", headers={"If-None-Match": '"v1"'})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == '"v1"'
    r = httpx.get(http_server.url + "/doc.pdf", headers={"If-None-Match": '"v0"'})
    assert r.status_code == 200 and r.content == PDF


def test_if_modified_since_gets_304(http_server):
    modified = 1_700_000_000.0
    http_server.route("/doc.pdf", PDF, last_modified=modified)
    r = httpx.get(http_server.url + "/doc.pdf")
    last_modified = r.headers["last-modified"]
    assert last_modified == "Tue, 14 Nov 2023 22:13:20 GMT"

    r = httpx.get(http_server.url + "/doc.pdf", headers={"If-Modified-Since": last_modified})
    assert r.status_code == 304 and r.content == b""
    older = "Tue, 14 Nov 2023 22:13:19 GMT"
    r = httpx.get(http_server.url + "/doc.pdf", headers={"If-Modified-Since": older})
    assert r.status_code == 200 and r.content == PDF


def test_redirect_followed(http_server):
    http_server.route("/final.pdf", PDF)
    http_server.redirect("/old.pdf", "/final.pdf", status=301)
    r = httpx.get(http_server.url + "/old.pdf", follow_redirects=True)
    assert r.status_code == 200 and r.content == PDF
    assert [h.status_code for h in r.history] == [301]
    assert str(r.url) == http_server.url + "/final.pdf"
    assert http_server.count("/old.pdf") == http_server.count("/final.pdf") == 1


def test_delay_causes_read_timeout_and_shutdown_is_prompt():
    with Server() as server:
        server.route("/slow.pdf", PDF, delay=5.0)
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(server.url + "/slow.pdf", timeout=0.2)
        start = time.monotonic()  # the handler is still sleeping here
    assert time.monotonic() - start < 1.0


def test_chunked_response_has_no_content_length(http_server):
    body = b"x" * (200 * 1024)  # four 64 KiB chunks
    http_server.route("/big.pdf", body, chunked=True, chunk_delay=0.02)
    start = time.monotonic()
    with httpx.stream("GET", http_server.url + "/big.pdf") as r:
        assert "content-length" not in r.headers
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.read() == body
    assert time.monotonic() - start >= 0.06  # three pauses between four chunks


def test_handler_records_post(http_server):
    def embed(request):
        texts = request.json()["input"]
        return 200, {"Content-Type": "application/json"}, b'{"n": %d}' % len(texts)

    http_server.handler("/v1/embeddings", embed)
    r = httpx.post(http_server.url + "/v1/embeddings", json={"input": ["a", "b"]},
                   headers={"Authorization": "Bearer k"})
    assert r.status_code == 200 and r.json() == {"n": 2}

    [request] = http_server.requests
    assert (request.method, request.path) == ("POST", "/v1/embeddings")
    assert request.headers["authorization"] == "Bearer k"
    assert request.headers["AUTHORIZATION"] == "Bearer k"
    assert "Content-Type" in request.headers
    assert request.json() == {"input": ["a", "b"]}


def test_handler_exception_is_500(http_server):
    http_server.handler("/boom", lambda request: 1 / 0)
    r = httpx.get(http_server.url + "/boom")
    assert r.status_code == 500
    assert b"ZeroDivisionError" in r.content


def test_route_replacement(http_server):
    http_server.route("/doc.pdf", b"first", etag="1")
    with httpx.Client(base_url=http_server.url) as client:  # one keep-alive connection throughout
        assert client.get("/doc.pdf").content == b"first"
        http_server.route("/doc.pdf", b"second", etag="2")
        r = client.get("/doc.pdf")
        assert r.content == b"second" and r.headers["etag"] == '"2"'
    assert http_server.count("/doc.pdf") == 2
