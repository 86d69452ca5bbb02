"""The example static site of docs/related.md, built as that page builds it and read in Chromium.

docs/examples/related-site holds posts.csv and build.py (a stand-in site generator); embedkit
embeds the posts, relates them, exports the lists and writes related.js. A real HTTP server
serves the result and headless Chromium renders post pages: each must show, as links, the
related posts the database holds for it.
"""

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import browser
import embedkit
from embedkit.cli import cli

pytestmark = pytest.mark.browser

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "related-site"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory, minilm):
    """(base URL of the served site, the embeddings database)."""
    directory = tmp_path_factory.mktemp("related-site")
    for name in ("posts.csv", "build.py"):
        shutil.copy(EXAMPLE / name, directory / name)
    subprocess.run([sys.executable, "build.py"], cwd=directory, check=True, capture_output=True)
    db = str(directory / "embeddings.db")
    runner = CliRunner()
    for args in (
        ["embed-multi", "posts", str(directory / "posts.csv"), "--metadata-column", "title",
         "--metadata-column", "url", "--metadata-column", "section", "--store"],
        ["related", "posts", "-n", "3"],
        ["export-related", "posts", str(directory / "site" / "related"), "-f", "title", "-f", "url"],
        ["widget", str(directory / "site" / "assets")],
    ):
        result = runner.invoke(cli, [*args, "-d", db] if args[0] != "widget" else args)
        assert result.exit_code == 0, result.output
    handler = functools.partial(QuietHandler, directory=str(directory / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", db
    server.shutdown()
    server.server_close()


def expected_links(db, id):
    with embedkit.Database(db) as database:
        rows = database.conn.execute(
            "select json_extract(p.metadata, '$.title'), json_extract(p.metadata, '$.url') "
            "from posts_related as r join posts as p on p.id = r.other_id where r.id = ? order by r.rank",
            [id],
        ).fetchall()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("post", ["rye-bread", "sqlite-wal", "compost"])
def test_each_post_shows_its_related_posts(site, post):
    if shutil.which(browser.CHROMIUM) is None:
        pytest.fail(f"{browser.CHROMIUM} is not installed: Debian's chromium package is needed, as .ci/run installs")
    url, db = site
    page = browser.parse(browser.chromium("--dump-dom", f"{url}/posts/{post}.html"))
    navs = page.find_all("nav", "embedkit-related")
    assert len(navs) == 1, f"no related list on {post}:\n{page.text()[:1500]}"
    assert [h2.text() for h2 in navs[0].find_all("h2")] == ["Related posts"]
    shown = [(a.text(), a.attrs.get("href")) for a in navs[0].find_all("a")]
    assert shown == expected_links(db, post)
    assert len(shown) == 3 and all(href.startswith("/posts/") for _, href in shown)
    assert f"/posts/{post}.html" not in [href for _, href in shown]
