"""Write real PDF files of every kind a PDF ingester must cope with.

Each function takes a ``path`` (pathlib.Path), writes the file and returns the path.
Files are written by hand (a few PDF objects and an xref table) so tests need only
pypdf, and so the damaged variants can be damaged byte by byte.
"""

import base64
import io
import re
import shutil
import textwrap
import zlib
from pathlib import Path

import pypdf

DATA = Path(__file__).parent / "data"

_WIDTH, _MIN_HEIGHT, _MARGIN, _LEADING = 595, 842, 50, 14  # A4, points
_WRAP = 90  # characters per line: ~Helvetica 11pt across A4 less margins


def _stream(data, entries=b""):
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(data), entries, data)


def _pdf_string(text):
    # UTF-16BE with a BOM is valid for any Unicode text in document strings.
    return b"<" + ("\ufeff" + text).encode("utf-16-be").hex().encode() + b">"


def _document(pages, title=None, extra=()):
    """PDF bytes; ``pages`` is a list of (content stream, resources, height).

    ``extra`` objects are numbered from 4 + 2 * len(pages) on, in order.
    """
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages))).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, (content, resources, height) in enumerate(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources %s /Contents %d 0 R >>"
            % (_WIDTH, height, resources, 5 + 2 * i)
        )
        objects.append(_stream(content))
    objects += extra
    trailer = b"/Root 1 0 R"
    if title is not None:
        objects.append(b"<< /Title %s /Producer (embedkit tests) >>" % _pdf_string(title))
        trailer += b" /Info %d 0 R" % len(objects)
    trailer += b" /Size %d" % (len(objects) + 1)

    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")  # binary comment: marks the file as binary
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< %s >>\nstartxref\n%d\n%%%%EOF\n" % (trailer, xref)
    return bytes(out)


def _text_page(text):
    lines = []
    for paragraph in text.replace("\r\n", "\n").split("\n"):
        # Long words (URLs) overflow rather than being split, so words stay intact.
        lines += textwrap.wrap(paragraph, _WRAP, break_long_words=False, break_on_hyphens=False) or [""]
    height = max(_MIN_HEIGHT, 2 * _MARGIN + _LEADING * len(lines))  # one string is one page
    shown = []
    for line in lines:
        raw = line.encode("cp1252", "replace")  # WinAnsiEncoding; others become "?"
        shown.append(b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b") Tj T*")
    content = b"BT /F1 11 Tf %d TL %d %d Td\n%s\nET" % (
        _LEADING, _MARGIN, height - _MARGIN, b"\n".join(shown)
    )
    return content, b"<< /Font << /F1 3 0 R >> >>", height


def _text_bytes(pages, title=None):
    return _document([_text_page(text) for text in pages], title)


def text_pdf(path, pages, title=None):
    """A normal PDF, one string per page in Helvetica; ``title`` goes in /Info (none if None)."""
    path.write_bytes(_text_bytes(pages, title))
    return path


def paper_pdf(path, title, header, body, stamp):
    """A paper's first page and no /Info title: a small header line, the title in large type
    (scaled by the text matrix, as many PDF writers do), the body, and a stamp turned 90
    degrees in the margin in type larger still (as arXiv's is)."""

    def shown(text):
        return b"(" + text.encode("cp1252").replace(b"(", b"\\(").replace(b")", b"\\)") + b") Tj"

    lines = textwrap.wrap(body, _WRAP)
    content = b"\n".join([
        b"BT /F1 9 Tf 1 0 0 1 50 800 Tm " + shown(header) + b" ET",
        b"BT /F1 1 Tf 17 0 0 17 50 760 Tm " + shown(title) + b" ET",
        b"BT /F1 24 Tf 0 1 -1 0 30 200 Tm " + shown(stamp) + b" ET",
        b"BT /F1 10 Tf 12 TL 1 0 0 1 50 720 Tm " + b" T* ".join(shown(line) for line in lines) + b" ET",
    ])
    path.write_bytes(_document([(content, b"<< /Font << /F1 3 0 R >> >>", _MIN_HEIGHT)]))
    return path


def image_only_pdf(path, pages=2):
    """Scanned pages: each page is one greyscale image, with no fonts and no text layer."""
    width, height = 200, 283
    # Dark bars on white, like lines of print seen from afar.
    rows = (
        bytes(40 if 20 < x < 180 and y % 12 < 5 and y > 20 else 255 for x in range(width))
        for y in range(height)
    )
    image = _stream(
        zlib.compress(b"".join(rows)),
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Filter /FlateDecode " % (width, height),
    )
    draw = b"q %d 0 0 %d 0 0 cm /Im0 Do Q" % (_WIDTH, _MIN_HEIGHT)
    resources = b"<< /XObject << /Im0 %d 0 R >> >>" % (4 + 2 * pages)  # one image, shared
    path.write_bytes(_document([(draw, resources, _MIN_HEIGHT)] * pages, extra=[image]))
    return path


def encrypted_pdf(path, user_password="secret"):
    """A text PDF that needs ``user_password`` to open (RC4-128, which pypdf writes without extras)."""
    source = pypdf.PdfReader(io.BytesIO(_text_bytes(["Encrypted secret text."], "Encrypted")))
    writer = pypdf.PdfWriter(clone_from=source)
    writer.encrypt(user_password, owner_password="owner-" + user_password, algorithm="RC4-128")
    writer.write(path)
    return path


# AES needs the `cryptography` package to write (and to read), which tests must not
# need, so this file was made once, in a venv with pypdf 7.1.0 and cryptography:
#     w = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(_text_bytes(
#         ["Owner protected text opens without a password."], "Owner protected"))))
#     w.pdf_header = b"%PDF-1.7"
#     w.encrypt("", owner_password="owner", algorithm="AES-256",
#               permissions_flag=pypdf.constants.UserAccessPermissions.PRINT)
#     w.write(buf); print(base64.encodebytes(zlib.compress(buf.getvalue(), 9)).decode())
_OWNER_AES256 = b"""
eNqNVL2LXFUUL0TBJ1iJFhZehG0E8+7XuR8wrG52Z4mYdZcdkwgS5X5uJuy+t755Ezb+AQoGjGiR
FMpiYaWVSApTiBaCglgYLFIIrlZWIolFQPG82a/BsXDuFPee9zu/37nn486tLS0/zU7oYm7vl+9/
KBihpPYXi16vKF+8vJ1Iuehat1lvFOWa20gjwhGwXszPF6mKHZDPOExwRfn8MI7Iy0R0eHK+KBfr
cdUSNuUq/tO1E2oSQveVypUUh+5kvYNcFBdYIEbyjnE9jepxEzCojmG5Rp/JhhF5GCT+UbhqkW9E
4F+hyxn9jqMoB2PfTo6dkRXlSTdKE/byVNq8lNphcEXZr0Idh9UGKc8Nq4VqNDw0TAnAlMDpVG20
FwhjvAOM2ia5rWLhykp735kndm6/8Papm299duLW3dvnPn3gjVdvfLj31Ju/3tv9/e+br9y5e/1K
/8HXTj++e/HZ78yPcfRe9Ufv0ffvPLT70QfX/vq2Zp/f+mL92m/vvvTlT4M/y/Tk3Y+be9cfufrY
/c8sLoyv7tXmxleffL3z8De77/xMu8AOpA9CVNM5GLabifQC00p5zjkDz6zWhoGz3FnHYqTgveMu
ihAokwpsYpZx5iPlLBmfJY2egfBcqmASDSl7n3imStvoQuAWrUgOITilnTMGvOE6AVgHUcoYrFNY
srWmjuOQGgwmM+MlUMOyNlp4Gm1kBqW8oCJCijwEoIgQPgkudVY0ahRnzmmrFMxPlUNP3fUsAWwg
oo4KwwH3a0Ri/ww3W5QuB62romtiUa6SHmc8OiONgxyTzZ6ZzIT2mTKmgHkqE14yOwnd6vInmfQ2
ckOFSBpENq7LDc2gslDRCK0Zxitj5iIgBi99hvRcDsF65ymmiCmdGNhogTKuJJdB6Zyd0YEDMjIn
QDIjwDCKeQdtJRUKMIEJeKDoFahKIIRNUkI0XjOQ3TQsT4Zk0MaD3cK4vdC/1A1cuVSH1e1UdaAV
Ui70B2fFUX4EP5ynQbu1TPYJukNzfFjtk57kNgefY6YaKxCzoDmKxCgGq6MwRnEAw00OGG62Obkk
PFgqlRHKMuG7RCCNtRI5LHjKrXIM8665U9RICNiZWcgQowcNVKuAjilgV2JDYSlM9kmlrolSs4VP
g7dc2ohNggtFOKbWYqe6GA0NWYbpDtlpUi4oMQU9+hEFIIBkcmRjONaTL9WxTckZG+NixsaBzdiE
NDM2YLM4LfWxrW3ccDM1k1YeDF9PGHK5Xtf4vu4/ms9VuSbqYL+ET2fPiBRYpE5Tj2OEM8uxSDjT
WKUQgsjz/wdyfvLuNZe3W6IPH9NR65p2kjjGrSjm5vqry8U/apjLNA==
"""


def owner_encrypted_pdf(path):
    """AES-256 encrypted with an empty user password and an owner password; printing only."""
    path.write_bytes(zlib.decompress(base64.b64decode(_OWNER_AES256)))
    return path


def truncated_pdf(path):
    """A five-page text PDF with its last 40% cut off (an interrupted download)."""
    data = _text_bytes([f"Page {i} of the truncated file." for i in range(1, 6)], "Truncated")
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def broken_xref_pdf(path):
    """A text PDF whose xref offsets are all wrong; the file length is unchanged.

    Every xref entry points 3 bytes too far and startxref points into the middle of
    the body, so pypdf must rebuild the table by scanning for "N 0 obj" (strict=True
    gives up with "Broken xref table").
    """
    data = _text_bytes(["First page of the broken xref file.", "Second page."], "Broken xref")
    body, xref = data.rsplit(b"\nxref\n", 1)
    xref = re.sub(rb"(\d{10}) 00000 n", lambda m: b"%010d 00000 n" % (int(m[1]) + 3), xref)
    xref, start = xref.rsplit(b"startxref\n", 1)
    digits = start.split(b"\n", 1)[0]
    start = start.replace(digits, b"%0*d" % (len(digits), int(digits) // 2), 1)
    path.write_bytes(body + b"\nxref\n" + xref + b"startxref\n" + start)
    return path


def zero_byte_pdf(path):
    """An empty file named .pdf."""
    path.write_bytes(b"")
    return path


def not_a_pdf(path):
    """An HTML page saved under a .pdf name (a login page instead of the download)."""
    path.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
                    "<body><p>Please sign in to download this document.</p></body></html>\n")
    return path


def many_pages_pdf(path, n=300):
    """``n`` pages, page i reading "Page i of n." plus a sentence that differs per page."""
    animals = ["fox", "owl", "cat", "eel", "yak", "bee", "emu"]
    pages = [
        f"Page {i} of {n}. The {animals[i % 7]} on page {i} counts {i * 37 % 1000} pebbles."
        for i in range(1, n + 1)
    ]
    return text_pdf(path, pages, title=f"{n} pages")


def rtl_pdf(path):
    """Hebrew and Arabic text in an embedded font (a fixture: see data/make_rtl_pdf.py)."""
    shutil.copyfile(DATA / "rtl.pdf", path)
    return path
