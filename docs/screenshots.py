"""Regenerate the Datasette screenshots in docs/images/ (needs Debian's chromium).

    python docs/screenshots.py

Builds the docs' posts collection in a temporary directory with `embedkit embed-multi`, serves
it with `datasette serve`, and has headless Chromium capture each page (tests/browser.py).
"""

import pathlib
import sys
import tempfile

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))

import browser  # noqa: E402

IMAGES = DOCS / "images"
PAGES = {
    "datasette-similar-query.png": "/embeddings/posts/-/similar?q=bread+recipes",
    "datasette-row-link.png": "/embeddings/posts/1",
    "datasette-similar-id.png": "/embeddings/posts/-/similar?id=1",
}


def main():
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as directory, browser.serve(browser.build_posts(directory)) as url:
        for name, path in PAGES.items():
            browser.chromium(f"--screenshot={IMAGES / name}", "--window-size=1100,700", "--hide-scrollbars", url + path)
            print(f"{IMAGES / name}: {path}")


if __name__ == "__main__":
    main()
