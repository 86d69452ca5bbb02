"""Regenerate the pictures of docs/explore.md in docs/images/ (needs the explore extra and
Debian's chromium).

    python docs/explore_pictures.py

Runs every command of docs/explore.md in a temporary directory, as the tests do, and keeps the
PNGs they draw (PICTURES); then opens the map.html they wrote in headless Chromium, hovers over
one item and captures the page. tests/test_explore.py checks the PNGs still match.
"""

import os
import pathlib
import shutil
import sys
import tempfile

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))

import browser  # noqa: E402
import test_docs  # noqa: E402

IMAGES = DOCS / "images"
PICTURES = {"map.png": "explore-map.png", "modules.png": "explore-modules.png", "heatmap.png": "explore-heatmap.png"}
HOVERED = "math.sin"


def run_page(directory) -> pathlib.Path:
    """Run docs/explore.md in directory; the directory."""
    directory = pathlib.Path(directory)
    previous = os.getcwd()
    os.chdir(directory)  # the page's commands run in this process, in its directory
    try:
        test_docs.run_page("explore.md", directory)
    finally:
        os.chdir(previous)
    return directory


def main():
    with tempfile.TemporaryDirectory() as directory:
        run_page(directory)
        for made, kept in PICTURES.items():
            shutil.copyfile(pathlib.Path(directory) / made, IMAGES / kept)
            print(IMAGES / kept)
        with browser.Page((pathlib.Path(directory) / "map.html").as_uri(), width=1000, height=640) as page:
            x, y = page.evaluate(
                "(function () { var root = document.querySelector('[data-embedkit-map]');"
                " var box = root.embedkitMap.canvas.getBoundingClientRect();"
                f" var at = root.embedkitMap.screenPosition('{HOVERED}');"
                " return [box.left + at[0], box.top + at[1]]; })()"
            )
            page.mouse("mouseMoved", x, y)
            page.screenshot(IMAGES / "explore-map-html.png")
        print(IMAGES / "explore-map-html.png")


if __name__ == "__main__":
    main()
