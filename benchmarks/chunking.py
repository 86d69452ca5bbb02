"""Do the default chunks of PDFs fit what the model reads?

    python benchmarks/chunking.py PDF [PDF ...] [--model all-MiniLM-L6-v2]

Extracts each PDF's pages as `embedkit embed-multi` does and splits them with the default
chunker of a new collection of the model (chunks of as many tokens as it reads), and, as the
reference, with the default before it (recursive chunks of 1000 characters, overlap 100).
Prints, for each and in total: the chunks, how many are longer than the model reads (their
ends are never embedded), the longest in tokens, and the seconds splitting took.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment_line, table  # noqa: E402

from embedkit.chunking import Chunker, for_model  # noqa: E402
from embedkit.models import get_model  # noqa: E402
from embedkit.sources.pdf import extract  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdfs", nargs="+", metavar="PDF")
    parser.add_argument("--model", default=None, help="model id (default: embedkit's default model)")
    args = parser.parse_args()

    model = get_model(args.model)
    limit = model.max_tokens
    chunkers = {
        "recursive 1000 chars (reference)": Chunker("recursive", 1000, 100),
        "default for the model": for_model(model),
    }
    print(environment_line())
    print(f"model {model.model_id}, reads {limit} tokens; default chunker {for_model(model).signature}")
    totals = {name: [0, 0, 0, 0.0] for name in chunkers}
    rows = []
    for path in args.pdfs:
        with open(path, "rb") as fp:
            title, pages = extract(fp.read())
        for name, chunker in chunkers.items():
            started = time.perf_counter()
            chunks = [chunk for page in pages for chunk in chunker.split(page)]
            seconds = time.perf_counter() - started
            counts = model.count_tokens(chunks)
            over = sum(count > limit for count in counts)
            rows.append([os.path.basename(path), len(pages), name, len(chunks), over, max(counts), f"{seconds:.2f}"])
            total = totals[name]
            total[0], total[1], total[2], total[3] = total[0] + len(chunks), total[1] + over, max(total[2], *counts), total[3] + seconds
    for name, (chunks, over, longest, seconds) in totals.items():
        rows.append(["all", "", name, chunks, over, longest, f"{seconds:.2f}"])
    table(["pdf", "pages", "chunker", "chunks", f"over {limit} tokens", "longest", "split s"], rows)


if __name__ == "__main__":
    main()
