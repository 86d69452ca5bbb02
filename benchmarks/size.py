"""On-disk size of a collection of PDF chunks against its raw vectors plus stored text.

    python benchmarks/size.py [--papers 50] [--pages 10] [--real-model] [--seed 0]

Generates seeded synthetic papers as real PDFs (tests/pdfs.py's writer), embeds them the way
`embedkit embed-multi papers pdfs/*.pdf --store` does (PdfSource, the collection's default
chunker: recursive 1000-character chunks for the stand-in model, which has no tokenizer;
256-token chunks with --real-model), then prints the database file's size as a multiple of
- the raw data: float32 vectors + the chunks' text (UTF-8) — the goal is <= 1.15x;
- the raw data plus ids and metadata JSON (what else a row must hold).
Vector values do not change the size, so by default a fast stand-in model with the default
model's 384 dimensions makes them (--real-model uses all-MiniLM-L6-v2, ~2 minutes).
Reference, in the same run: the same rows copied into a database with SQLite's default 4 KiB
pages, which embedkit's 8 KiB pages replace.
"""

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import environment_line, synthetic_texts, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import embedkit  # noqa: E402
import pdfs  # noqa: E402
from embedkit import fulltext, models, storage  # noqa: E402
from embedkit.sources.pdf import PdfSource  # noqa: E402

GOAL = 1.15


class StandIn(models.EmbeddingModel):
    """384 seeded pseudo-random dimensions per text: the stored bytes of a real model, fast."""

    model_id = "size-stand-in"
    dimensions = 384
    source = "benchmarks/size.py"

    def _embed(self, texts):
        seeds = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in texts]
        return np.stack([np.random.default_rng(s).standard_normal(384).astype(np.float32) for s in seeds])


def file_size(db) -> int:
    db.conn.execute("pragma wal_checkpoint(truncate)")
    return Path(db.path).stat().st_size


def copy_with_page_size(source_path, target_path, page_size) -> int:
    """The same database with another page size (VACUUM INTO keeps the source's page size, so copy rows)."""
    conn = storage.sqlite3.connect(str(target_path), isolation_level=None)
    conn.execute(f"pragma page_size = {page_size}")
    conn.execute("pragma journal_mode = wal")
    conn.execute(f"attach database '{source_path}' as src")
    conn.execute("begin")
    schema = conn.execute(
        "select type, name, sql from src.sqlite_master where type in ('table', 'index') and sql is not null "
        "order by sql not like 'CREATE VIRTUAL%', type = 'index'"
    ).fetchall()
    for _kind, name, sql in schema:
        # A virtual table (the keyword index) makes its own shadow tables: those are not made twice.
        if not conn.execute("select 1 from main.sqlite_master where name = ?", [name]).fetchone():
            conn.execute(sql)
    for kind, name, sql in schema:
        if kind == "table" and not sql.upper().startswith("CREATE VIRTUAL"):
            conn.execute(f"insert or replace into main.{storage.quote(name)} select * from src.{storage.quote(name)}")
    conn.execute("commit")
    conn.execute("detach database src")
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    return Path(target_path).stat().st_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--papers", type=int, default=50)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--real-model", action="store_true", help="embed with all-MiniLM-L6-v2 instead of the stand-in")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(environment_line())
    model = None if args.real_model else models.register(StandIn()).model_id

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Pages of about 4,000 characters, as a page of a paper holds: five abstracts each.
        texts = iter(synthetic_texts(args.papers * args.pages * 5, args.seed))
        locations = []
        for paper in range(args.papers):
            pages = ["\n\n".join(next(texts) for _ in range(5)) for _ in range(args.pages)]
            path = tmp / "pdfs" / f"paper-{paper:03d}.pdf"
            path.parent.mkdir(exist_ok=True)
            pdfs.text_pdf(path, pages, title=f"A synthetic paper number {paper} on embeddings")
            locations.append(f"pdfs/{path.name}")

        db = embedkit.Database(tmp / "embeddings.db")
        papers = db.create_collection("papers", model=model)
        import os

        os.chdir(tmp)  # sources named as a user would type them: pdfs/paper-000.pdf
        stats = papers.embed_multi([PdfSource(location) for location in locations], store=True)
        assert stats.failed == 0, stats.failures
        vector_bytes, text_bytes, id_bytes, metadata_bytes, bookkeeping, count = db.conn.execute(
            "select sum(length(embedding)), sum(length(cast(content as blob))), sum(length(cast(id as blob))), "
            "sum(length(cast(metadata as blob))), sum(length(content_hash) + length(updated)), count(*) from papers"
        ).fetchone()
        raw = vector_bytes + text_bytes
        size = file_size(db)
        db.conn.execute("vacuum")
        vacuumed = file_size(db)
        db.close()
        default_pages = copy_with_page_size(tmp / "embeddings.db", tmp / "default-pages.db", 4096)
        # What the keyword (FTS5) index of issue 4 adds: the same file without it.
        shutil.copy(tmp / "embeddings.db", tmp / "no-keywords.db")
        bare = embedkit.Database(tmp / "no-keywords.db")
        fulltext.drop(bare.conn, "papers")
        bare.conn.execute("vacuum")
        without_keywords = file_size(bare)
        bare.close()

    print(f"\n{args.papers} PDFs x {args.pages} pages -> {count} chunks, mean {text_bytes / count:.0f} bytes of text "
          f"and {vector_bytes / count:.0f} of vector a chunk; besides those a row holds its id "
          f"({id_bytes / count:.0f} bytes, again in the id index), metadata ({metadata_bytes / count:.0f}: source, "
          f"page, chunk, title) and content hash + timestamp ({bookkeeping / count:.0f}, the hash again in its index)")
    rows = [
        ["embedkit (8 KiB pages), as built", f"{size:,}", f"{size / raw:.3f}x", f"{size / (raw + id_bytes + metadata_bytes):.3f}x"],
        ["embedkit, after VACUUM", f"{vacuumed:,}", f"{vacuumed / raw:.3f}x", f"{vacuumed / (raw + id_bytes + metadata_bytes):.3f}x"],
        ["embedkit without its keyword index, VACUUM", f"{without_keywords:,}", f"{without_keywords / raw:.3f}x",
         f"{without_keywords / (raw + id_bytes + metadata_bytes):.3f}x"],
        ["reference: same rows, 4 KiB pages", f"{default_pages:,}", f"{default_pages / raw:.3f}x",
         f"{default_pages / (raw + id_bytes + metadata_bytes):.3f}x"],
    ]
    table(["database", "bytes", "/ (vectors + text)", "/ (vectors + text + ids + metadata)"], rows,
          title=f"raw: vectors {vector_bytes:,} + text {text_bytes:,} = {raw:,} bytes")
    verdict = "met" if size / raw <= GOAL else "NOT met"
    print(f"\ngoal: file <= {GOAL}x vectors + text, as built: {size / raw:.3f}x ({verdict})")


if __name__ == "__main__":
    main()
