"""The Datasette plugin's pages as a person sees them: rendered by a real headless Chromium.

What a person sees in a browser is checked in a browser: the "Similar items" link on a row
page is added by a script, so only a page whose scripts ran shows it. The collection is built
with the real CLI and model, and served by a real `datasette serve`; see tests/browser.py.
Chromium is required (Debian's chromium; .ci/run installs it): without it these tests fail.
"""

import shutil

import pytest

import browser
from browser import Element

pytestmark = [pytest.mark.browser, pytest.mark.datasette]


def render(url) -> Element:
    """The page at url as headless Chromium left it after running its scripts."""
    if shutil.which(browser.CHROMIUM) is None:
        pytest.fail(
            f"{browser.CHROMIUM} is not installed: these tests look at the pages in a real browser. "
            "Install Debian's chromium package (apt-get install chromium), as .ci/run does."
        )
    return browser.parse(browser.chromium("--dump-dom", url))


def results(page, url):
    """The rows of the similar page's results table: dicts of score, id, href, content, metadata."""
    tables = page.find_all("table", "embedkit-results")
    assert len(tables) == 1, (
        f"{len(tables)} table.embedkit-results (not 1) in the page Chromium rendered for {url}:\n{page.text()[:2000]}"
    )
    rows = []
    for tr in tables[0].find_all("tbody")[0].find_all("tr"):
        cells = {td.attrs.get("class"): td for td in tr.find_all("td")}
        links = cells["id"].find_all("a")
        rows.append(
            {
                "score": float(cells["score"].text()),
                "id": cells["id"].text(),
                "href": links[0].attrs.get("href") if links else None,
                "content": cells["content"].text(),
                "metadata": cells["metadata"].text(),
            }
        )
    assert rows, f"the results table for {url} has no rows"
    return rows


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Base URL of a real Datasette serving the docs' posts collection."""
    with browser.serve(browser.build_posts(tmp_path_factory.mktemp("site"))) as url:
        yield url


def test_similar_page_for_typed_text(site):
    url = site + "/embeddings/posts/-/similar?q=bread+recipes"
    page = render(url)
    rows = results(page, url)
    assert rows[0]["id"] == "4", f"expected the rye bread post first for {url}, got {rows}"
    assert rows[0]["href"] == "/embeddings/posts/4"
    assert "rye flour" in rows[0]["content"] and "baking" in rows[0]["metadata"]
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert sorted(row["id"] for row in rows) == ["1", "2", "3", "4", "5"]
    # The form shows what was searched, ready to be edited.
    [box] = [i for i in page.find_all("input") if i.attrs.get("name") == "q"]
    assert box.attrs.get("value") == "bread recipes"


def test_row_page_links_to_similar_items(site):
    url = site + "/embeddings/posts/1"
    page = render(url)
    links = [a for p in page.find_all("p", "embedkit-similar") for a in p.find_all("a")]
    assert links, (
        f"no p.embedkit-similar a in the page Chromium rendered for {url} (did the plugin's script run?):\n"
        + page.text()[:2000]
    )
    assert [a.text() for a in links] == ["Similar items"]
    href = links[0].attrs.get("href")
    assert href == "/embeddings/posts/-/similar?id=1"
    # Right after the page's heading.
    paragraph = links[0].parent
    siblings = [c for c in paragraph.parent.children if isinstance(c, Element)]
    before = siblings[: siblings.index(paragraph)]
    assert before and before[-1].tag == "h1", f"the link is not right after the h1: {[e.tag for e in siblings]}"

    similar_url = site + href
    rows = results(render(similar_url), similar_url)
    ids = [row["id"] for row in rows]
    assert "1" not in ids, f"item 1 is listed as similar to itself: {ids}"
    assert sorted(ids) == ["2", "3", "4", "5"]
