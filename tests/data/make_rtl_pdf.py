"""Make tests/data/rtl.pdf: Hebrew and Arabic text set in an embedded TrueType font.

Run it from the repository root (it needs fonts and packages tests do not):

    pip install fpdf2 uharfbuzz        # uharfbuzz: Arabic joining and bidi reordering
    python tests/data/make_rtl_pdf.py  # needs DejaVuSans.ttf (Debian: fonts-dejavu-core)

The text is shaped and laid out right to left, so the content stream holds glyphs in
visual order, as PDFs from word processors do; a ToUnicode map gives the letters back.
The font is cut down to the glyphs used, without hinting, to keep the file a few KB.
"""

import datetime
import tempfile
from pathlib import Path

from fontTools import subset
from fpdf import FPDF

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
OUT = Path(__file__).with_name("rtl.pdf")

TITLE = "מסמך לדוגמה RTL"
HEBREW = "שלום עולם, זהו מסמך בעברית."
MIXED = "Hebrew שלום and Arabic مرحبا in one line."
ARABIC = "مرحبا بالعالم، هذا مستند باللغة العربية."


def small_font(path):
    """Save DejaVu Sans with only the glyphs (and Arabic joining forms) this text needs."""
    options = subset.Options()
    options.hinting = False
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.drop_tables += ["FFTM"]  # FontForge timestamps; fontTools cannot subset them
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=TITLE + HEBREW + MIXED + ARABIC)
    font = subset.load_font(FONT, options)
    subsetter.subset(font)
    subset.save_font(font, str(path), options)
    return path


def main():
    pdf = FPDF()
    pdf.set_creation_date(datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
    pdf.set_title(TITLE)
    pdf.set_text_shaping(True)
    # HarfBuzz reads the font file lazily, so it must exist until the output is written.
    with tempfile.TemporaryDirectory() as tmp:
        pdf.add_font("DejaVu", fname=small_font(Path(tmp) / "DejaVuSans-subset.ttf"))
        pdf.set_font("DejaVu", size=14)
        pdf.add_page()
        for line in (HEBREW, MIXED):
            pdf.multi_cell(0, 10, line, align="R", new_x="LMARGIN", new_y="NEXT")
        pdf.add_page()
        pdf.multi_cell(0, 10, ARABIC, align="R", new_x="LMARGIN", new_y="NEXT")
        pdf.output(str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")

if __name__ == "__main__":
    main()
