"""The related-items widget (src/embedkit/static/related.js) as a person sees it: in headless Chromium.

A real HTTP server on 127.0.0.1 (tests/httpserver.py, which also counts requests) serves
related.js, JSON files written by hand in export-related's format under the names
embedkit.related.file_name gives, and pages of widgets. Each page is rendered once, with many
widgets on it, and waits for every widget's "embedkit-related" event before it is dumped.
Chromium is required (Debian's chromium; .ci/run installs it): without it these tests fail.
"""

import html
import json
import pathlib
import shutil

import pytest

import browser
from embedkit.related import file_name
from httpserver import Server

pytestmark = pytest.mark.browser

RELATED_JS = pathlib.Path(__file__).parents[1] / "src" / "embedkit" / "static" / "related.js"

POSTS = [
    {"id": "post-4", "score": 0.8123, "title": "Rye bread", "url": "/posts/4/"},
    {"id": "post-3", "score": 0.7011, "title": "My sourdough starter", "url": "/posts/3/"},
    {"id": "post-2", "score": 0.5, "title": "Full-text search", "url": "/posts/2/"},
]
POST_LINKS = [("Rye bread", "/posts/4/"), ("My sourdough starter", "/posts/3/"), ("Full-text search", "/posts/2/")]
XSS = "<img src=x onerror=\"document.body.dataset.pwned='yes'\">"
LONG = "a" * 299  # with a last character, 300 characters: longer than 200, so the name is a hash
TRICKY = [
    "Post 1", "../etc/passwd", "日本語", "x.y~z", "con", "index", "Index", LONG + "1", LONG + "2", "🍞 bread", "CON", "e\u0301",
]
# Compared with file_name one by one (the widget's fileName): all of TRICKY and more.
NAMES = TRICKY + [
    "", "a", "A", "a-b_c", "com0", "lpt9", "com10", "nul.txt", "\x00", "tab\there", "𝔸", "\U0010ffff",
    "a" * 200, "a" * 201, "é" * 33, "é" * 34, "~~", "100%", "?#&=", "\\",
]

# Widgets of the main page: (html id, data-* attributes). data-embedkit-related is "id".
WIDGETS = [
    ("default", {"id": "post-1"}),
    ("no-slash", {"id": "post-1", "src": "/related"}),
    ("full-url", {"id": "post-1", "src": "{base}/related/"}),
    ("limit", {"id": "post-1", "limit": "2"}),
    ("title", {"id": "post-1", "title": "You may also like"}),
    ("no-title", {"id": "post-1", "title": ""}),
    ("template", {"id": "no-urls", "url": "/posts/{id}/"}),
    ("no-template", {"id": "no-urls"}),
    ("mixed", {"id": "mixed"}),
    ("xss", {"id": "xss"}),
    ("combined-1", {"id": "post-1", "src": "/combined/related.json"}),
    ("combined-2", {"id": "post-2", "src": "/combined/related.json", "title": "More"}),
    ("combined-missing", {"id": "post-9", "src": "/combined/related.json"}),
    ("combined-proto", {"id": "constructor", "src": "/combined/related.json"}),
    ("combined-broken", {"id": "post-1", "src": "/broken/related.json"}),
    ("missing-id", {"id": "nothing-here"}),
    ("broken-json", {"id": "broken"}),
    ("html-fallback", {"id": "html"}),
    ("server-error", {"id": "error"}),
    ("empty-list", {"id": "empty"}),
    ("not-a-list", {"id": "not-a-list"}),
    ("missing-dir", {"id": "post-1", "src": "/no-such-dir/"}),
    *((f"tricky-{i}", {"id": id}) for i, id in enumerate(TRICKY)),
]
EMPTY = [
    "no-template", "combined-missing", "combined-proto", "combined-broken", "missing-id", "broken-json",
    "html-fallback", "server-error", "empty-list", "not-a-list", "missing-dir",
]

# Run before related.js: count the widgets' "embedkit-related" events and the names check, then
# mark the body done, so a test knows the page finished rather than ran out of time.
COUNTER = """<script>
let pending = %d;
function done() { if (--pending === 0) document.body.dataset.done = "yes"; }
document.addEventListener("embedkit-related", done);
</script>"""


def script_literal(value) -> str:
    """value as a JavaScript literal inside <script> (no "</script>" in it)."""
    return json.dumps(value).replace("<", "\\u003c")


def widget(key, attrs, base="") -> str:
    """A widget's div; "{base}" in its data-src is the server's URL."""
    attributes = ""
    for name, value in attrs.items():
        value = value.format(base=base) if name == "src" else value
        attributes += f' data-{"embedkit-related" if name == "id" else name}="{html.escape(value)}"'
    return f'<div id="w-{key}"{attributes}></div>'


def page(body, pending) -> bytes:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>widgets</title>{COUNTER % pending}</head>'
        f"<body>{body}</body></html>"
    ).encode()


def json_route(server, path, value):
    server.route(path, json.dumps(value).encode(), content_type="application/json")


@pytest.fixture(scope="module")
def site():
    with Server() as server:
        server.route("/related.js", RELATED_JS.read_bytes(), content_type="text/javascript")

        def item(id, related):
            json_route(server, f"/related/{file_name(id)}.json", {"id": id, "related": related})

        item("post-1", POSTS)
        item("no-urls", [{"id": "Post 9", "score": 0.9, "title": "Nine"}, {"id": "post-8", "score": 0.8}])
        item("mixed", [
            {"id": "a", "score": 0.9, "title": "A", "url": "/a/"},
            {"id": "b", "score": 0.8, "title": "B"},  # no url and no data-url: skipped
            {"id": "c", "score": 0.7, "title": "C", "url": "javascript:alert(1)"},  # not a link to follow
            {"id": "d", "score": 0.6, "url": "https://example.com/d?x=1&y=2"},
        ])
        item("xss", [{"id": "x", "score": 0.5, "title": XSS, "url": "/x/"}])
        item("empty", [])
        json_route(server, f"/related/{file_name('not-a-list')}.json", {"id": "not-a-list", "related": {"a": 1}})
        broken = b'{"id": "broken", "related": ['
        server.route(f"/related/{file_name('broken')}.json", broken, content_type="application/json")
        server.route(f"/related/{file_name('html')}.json", b"<!doctype html><p>Not found</p>", content_type="text/html")
        server.route(f"/related/{file_name('error')}.json", json.dumps({"id": "error", "related": POSTS}).encode(),
                     status=500, content_type="application/json")
        for id in TRICKY:
            item(id, [{"id": "t", "score": 1.0, "title": f"related to {id}", "url": "/t/"}])
        json_route(server, "/combined/related.json", {"items": {
            "post-1": POSTS,
            "post-2": [{"id": "post-1", "score": 0.5, "title": "Backing up SQLite", "url": "/posts/1/"}],
            LONG + "1": [{"id": "post-1", "score": 0.5, "title": "Backing up SQLite", "url": "/posts/1/"}],
        }})
        server.route("/broken/related.json", b'{"items": {"post-1": [', content_type="application/json")

        body = "".join(widget(key, attrs, server.url) for key, attrs in WIDGETS)
        body += '<pre id="names"></pre><script src="/related.js"></script>'
        body += f"""<script>
Promise.all({script_literal(NAMES)}.map((id) => embedkitRelated.fileName(id))).then((names) => {{
  document.getElementById("names").textContent = JSON.stringify(names);
}}).finally(done);
</script>"""
        server.route("/main.html", page(body, len(WIDGETS) + 1), content_type="text/html; charset=utf-8")

        # Loaded once the page is complete (the "DOM is ready, start now" path); served under a
        # host name that is not localhost, so not a secure context: no crypto.subtle.
        insecure = [("long", {"id": LONG + "1"}), ("short", {"id": "post-1"}),
                    ("long-combined", {"id": LONG + "1", "src": "/combined/related.json"})]
        body = "".join(widget(key, attrs) for key, attrs in insecure)
        body += """<p id="secure"></p><script>
addEventListener("load", () => {
  document.getElementById("secure").textContent = String(isSecureContext && !!crypto.subtle);
  setTimeout(() => document.head.appendChild(document.createElement("script")).src = "/related.js", 0);
});
</script>"""
        server.route("/insecure.html", page(body, len(insecure)), content_type="text/html; charset=utf-8")
        yield server


def render(url, *flags) -> browser.Element:
    """The page at url as headless Chromium left it after running its scripts; all widgets done."""
    if shutil.which(browser.CHROMIUM) is None:
        pytest.fail(
            f"{browser.CHROMIUM} is not installed: these tests look at the widget in a real browser. "
            "Install Debian's chromium package (apt-get install chromium), as .ci/run does."
        )
    root = browser.parse(browser.chromium(*flags, "--dump-dom", url))
    [body] = root.find_all("body")
    assert body.attrs.get("data-done") == "yes", f"the widgets of {url} did not all finish:\n{body.text()[:2000]}"
    return root


@pytest.fixture(scope="module")
def main(site):
    """{html id: element} of the main page's widgets, and the page."""
    root = render(site.url + "/main.html")
    return {e.attrs["id"]: e for e in root.iter() if "id" in e.attrs}, root


def links(element):
    """[(text, href)] of a widget's links, in order; checks the markup around them."""
    [nav] = [c for c in element.children if isinstance(c, browser.Element)]
    assert nav.tag == "nav" and nav.attrs.get("class") == "embedkit-related"
    [ul] = nav.find_all("ul")
    assert ul.parent is nav
    items = ul.find_all("li")
    assert all(li.parent is ul for li in items)
    return [(a.text(), a.attrs.get("href")) for li in items for a in li.find_all("a")]


def heading(element):
    """The nav's h2 text, checking that it labels the nav; None when the nav has no heading."""
    [nav] = element.find_all("nav")
    headings = nav.find_all("h2")
    if not headings:
        assert "aria-labelledby" not in nav.attrs
        return None
    [h2] = headings
    assert nav.children[0] is h2
    assert h2.attrs.get("id") and nav.attrs.get("aria-labelledby") == h2.attrs["id"]
    assert "aria-label" not in nav.attrs
    return h2.text()


def test_per_item_directory(main):
    widgets, _ = main
    for key in ("default", "no-slash", "full-url"):
        assert links(widgets[f"w-{key}"]) == POST_LINKS, key
        assert heading(widgets[f"w-{key}"]) == "Related"


def test_limit(main):
    widgets, _ = main
    assert links(widgets["w-limit"]) == POST_LINKS[:2]


def test_titles(main):
    widgets, root = main
    assert heading(widgets["w-title"]) == "You may also like"
    assert links(widgets["w-title"]) == POST_LINKS
    assert heading(widgets["w-no-title"]) is None
    assert widgets["w-no-title"].find_all("nav")[0].attrs.get("aria-label") == "Related"
    assert links(widgets["w-no-title"]) == POST_LINKS
    ids = [h2.attrs["id"] for h2 in root.find_all("h2")]
    assert len(ids) == len(set(ids)), f"heading ids are not unique: {ids}"


def test_url_template_and_id_as_text(main):
    widgets, _ = main
    assert links(widgets["w-template"]) == [("Nine", "/posts/Post%209/"), ("post-8", "/posts/post-8/")]
    # Without data-url, a neighbour with no url is skipped; one with a javascript: url too.
    assert links(widgets["w-mixed"]) == [("A", "/a/"), ("d", "https://example.com/d?x=1&y=2")]


def test_combined_file(site, main):
    widgets, _ = main
    assert links(widgets["w-combined-1"]) == POST_LINKS
    assert heading(widgets["w-combined-2"]) == "More"
    assert links(widgets["w-combined-2"]) == [("Backing up SQLite", "/posts/1/")]
    assert site.count("/combined/related.json") == 1, "the combined file was fetched more than once"


def test_file_names_of_tricky_ids(main):
    widgets, _ = main
    for i, id in enumerate(TRICKY):
        assert links(widgets[f"w-tricky-{i}"]) == [(f"related to {id}", "/t/")], f"id {id!r} ({file_name(id)}.json)"
    names = json.loads(widgets["names"].text())
    assert dict(zip(NAMES, names)) == {id: file_name(id) for id in NAMES}


def test_degrades_to_nothing(main):
    widgets, _ = main
    for key in EMPTY:
        assert widgets[f"w-{key}"].children == [], f"w-{key} is not empty: {widgets[f'w-{key}'].text()!r}"


def test_title_is_text_not_html(main):
    widgets, root = main
    assert links(widgets["w-xss"]) == [(XSS, "/x/")]
    assert root.find_all("img") == []
    [body] = root.find_all("body")
    assert "data-pwned" not in body.attrs


def test_no_crypto_subtle(site):
    """Not a secure context: ids needing a hash render nothing, the rest render as usual."""
    host = "embedkit.test"
    url = site.url.replace("127.0.0.1", host) + "/insecure.html"
    root = render(url, f"--host-resolver-rules=MAP {host} 127.0.0.1", "--no-proxy-server")
    widgets = {e.attrs["id"]: e for e in root.iter() if "id" in e.attrs}
    assert widgets["secure"].text() == "false", "the page is a secure context: this test checks nothing"
    assert widgets["w-long"].children == []
    assert links(widgets["w-short"]) == POST_LINKS
    assert links(widgets["w-long-combined"]) == [("Backing up SQLite", "/posts/1/")]
