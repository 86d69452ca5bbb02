"""A stand-in static site generator: posts.csv -> site/index.html and site/posts/ID.html.

Each post page has the related-items widget: a <div data-embedkit-related="ID"> and
related.js, both filled in by `embedkit export-related` and `embedkit widget`.

    python build.py
"""

import csv
import html
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
SITE = pathlib.Path("site")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<script src="../assets/related.js" defer></script>
</head>
<body>
<p><a href="../index.html">All posts</a></p>
<article>
<h1>{title}</h1>
<p>{body}</p>
</article>
<div data-embedkit-related="{id}" data-src="../related/" data-title="Related posts"></div>
</body>
</html>
"""


def main():
    source = pathlib.Path("posts.csv") if pathlib.Path("posts.csv").exists() else HERE / "posts.csv"
    with open(source, newline="", encoding="utf-8") as fp:
        posts = list(csv.DictReader(fp))
    (SITE / "posts").mkdir(parents=True, exist_ok=True)
    for post in posts:
        fields = {key: html.escape(value) for key, value in post.items()}
        (SITE / "posts" / f"{post['id']}.html").write_text(PAGE.format(**fields), encoding="utf-8")
    links = "\n".join(f'<li><a href="posts/{html.escape(p["id"])}.html">{html.escape(p["title"])}</a></li>' for p in posts)
    (SITE / "index.html").write_text(
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Posts</title></head>\n'
        f"<body>\n<h1>Posts</h1>\n<ul>\n{links}\n</ul>\n</body>\n</html>\n",
        encoding="utf-8",
    )
    print(f"{len(posts)} posts in {SITE}/")


if __name__ == "__main__":
    main()
