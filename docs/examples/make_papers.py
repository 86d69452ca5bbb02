"""Write the sample PDFs in docs/examples/papers/ that docs/documents.md uses.

    python docs/examples/make_papers.py

Short stand-ins for real papers, in the author's own words, made with the test suite's
PDF writer (tests/pdfs.py) so the walkthrough runs offline.
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))

import pdfs  # noqa: E402

PAPERS = {
    "bitnet.pdf": ("The Era of 1-bit LLMs", [
        "Large language models are expensive to serve because every weight is a 16-bit number. "
        "This paper trains models whose weights take only three values: minus one, zero and one. "
        "A ternary weight needs about 1.58 bits, and a matrix product with ternary weights needs "
        "no multiplications at all, only additions and subtractions.\n\n"
        "The model, called BitNet b1.58, is trained from scratch with quantisation in the loop. "
        "Activations are kept at eight bits. From three billion parameters upwards it matches a "
        "full-precision model of the same size in perplexity and on downstream tasks.",
        "Ternary weights change the cost of inference. Memory for weights drops by a factor of "
        "about ten, so larger models fit on one device, and the energy of arithmetic falls because "
        "additions are far cheaper than multiplications.\n\n"
        "The authors argue that this defines a new scaling law and a new recipe for training "
        "high-performance and cost-effective models, and call for hardware designed for 1-bit "
        "models.",
    ]),
    "mixture-of-depths.pdf": ("Mixture-of-Depths", [
        "Transformers spend the same amount of compute on every token, yet some tokens are easy "
        "to predict and some are hard. Mixture-of-Depths lets the model decide, layer by layer, "
        "which tokens are worth processing.\n\n"
        "At each routed layer a small router scores the tokens and only the top k of them go "
        "through attention and the feed-forward block; the others skip the layer through the "
        "residual connection. Because k is fixed in advance, the compute graph has a static size.",
        "Routing around layers keeps quality while cutting the floating point operations per "
        "forward pass. Models trained this way match the baseline at equal training compute and "
        "are up to half again as fast to sample from.\n\n"
        "Routing decisions are made by the router without looking ahead, so the method works for "
        "autoregressive sampling, and it combines with mixture-of-experts into a single model.",
    ]),
    "mamba.pdf": ("Mamba: Linear-Time Sequence Modeling with Selective State Spaces", [
        "Attention compares every token with every other, so its cost grows with the square of "
        "the sequence length. State space models scan a sequence in linear time but have "
        "struggled with language, because their dynamics do not depend on the input.\n\n"
        "Mamba makes the state space parameters functions of the input, so the model can choose "
        "what to remember and what to forget as it reads. A hardware-aware parallel scan keeps "
        "training fast on GPUs.",
        "Without attention or even MLP blocks, Mamba reaches the quality of Transformers twice "
        "its size on language modelling, and it keeps improving on sequences a million tokens "
        "long. Inference throughput is about five times that of a Transformer of similar size.",
    ]),
    "griffin.pdf": ("Griffin: Gated Linear Recurrences with Local Attention", [
        "Recurrent networks compress the past into a fixed-size state, which makes inference fast "
        "and memory constant, but they have been hard to train at scale.\n\n"
        "Griffin mixes a gated linear recurrence with local attention over a sliding window. The "
        "recurrence carries long-range information while the local attention handles recent "
        "tokens precisely. The model matches Transformer quality with fewer training tokens and "
        "extrapolates to sequences longer than those seen in training.",
    ]),
}

if __name__ == "__main__":
    for name, (title, pages) in PAPERS.items():
        pdfs.text_pdf(HERE / "papers" / name, pages, title=title)
        print(HERE / "papers" / name)
