"""A folder of hostile PDFs, built on the spot (reportlab, pikepdf, PIL): what a user collects
from the wild. Used by tests/test_hostile.py (one copy) and benchmarks/bench_hostile.py
(many copies plus junk).

Every file's name says what it is; :data:`EXPECT` says what ``agree index`` must do with it:
``indexed`` (all pages), ``skipped`` (the file is named), ``either`` (poppler may or may not recover it: indexed, or named; never a crash).
"""

from __future__ import annotations

import io
import os
import random
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

EXPECT: dict[str, str] = {}  # file name -> indexed | skipped | either


def _expect(name: str, what: str) -> str:
    EXPECT[name] = what
    return name


def text_pdf(path: Path, pages: list[str], size=(612, 792), rotate: int = 0) -> Path:
    """A PDF with a text layer: one string per page (lines split on newlines), 11 pt
    Helvetica from 1 in off the top left; ``rotate`` sets every page's /Rotate."""
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=size)
    for text in pages:
        y = size[1] - 72
        for line in text.splitlines():
            c.setFont("Helvetica", 11)
            c.drawString(72, y, line)
            y -= 16
        c.showPage()
    c.save()
    if rotate:
        import pikepdf

        with pikepdf.open(path, allow_overwriting_input=True) as pdf:
            for page in pdf.pages:
                page.Rotate = rotate
            pdf.save(path)
    return path


def scan_image(text: str, size=(850, 1100), angle: float = 0.0, noise: float = 0.0,
               seed: int = 0) -> Image.Image:
    """A page image with ``text`` in large type (as a scanner would give it)."""
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(12, size[0] // 22))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    y = size[1] // 10
    for line in text.splitlines():
        draw.text((size[0] // 12, y), line, fill=0, font=font)
        y += size[0] // 14
    if angle:
        img = img.rotate(angle, expand=True, fillcolor=255)
    if noise:
        rng = random.Random(seed)
        px = img.load()
        for _ in range(int(noise * img.width * img.height)):
            px[rng.randrange(img.width), rng.randrange(img.height)] = rng.choice((0, 255))
    return img.convert("RGB")


def image_pdf(path: Path, images: list[Image.Image], resolution: float = 100.0) -> Path:
    """Image-only pages (PIL writes RGB pages as JPEG, DCTDecode)."""
    images[0].save(path, "PDF", resolution=resolution, save_all=True, append_images=images[1:])
    return path


def ccitt_pdf(path: Path, img: Image.Image, dpi: float = 100.0) -> Path:
    """One image-only page whose image is CCITT Group 4 (fax) encoded."""
    import pikepdf

    bw = img.convert("1")
    buf = io.BytesIO()
    bw.save(buf, "TIFF", compression="group4")
    tiff = Image.open(io.BytesIO(buf.getvalue()))
    offsets, counts = tiff.tag_v2[273], tiff.tag_v2[279]
    data = b"".join(buf.getvalue()[o : o + n] for o, n in zip(offsets, counts))
    pdf = pikepdf.new()
    w, h = bw.size
    image = pikepdf.Stream(pdf, data)
    image.Type, image.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
    image.Width, image.Height, image.BitsPerComponent = w, h, 1
    image.ColorSpace = pikepdf.Name.DeviceGray
    image.Filter = pikepdf.Name.CCITTFaxDecode
    image.DecodeParms = pikepdf.Dictionary(K=-1, Columns=w, Rows=h, BlackIs1=False)
    pw, ph = w * 72 / dpi, h * 72 / dpi
    content = pikepdf.Stream(pdf, f"q {pw:.2f} 0 0 {ph:.2f} 0 0 cm /Im0 Do Q".encode())
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, MediaBox=[0, 0, pw, ph], Contents=content,
                              Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image)))
    pdf.pages.append(pikepdf.Page(page))
    pdf.save(path)
    return path


def _lorem(i: int, n: int = 3) -> list[str]:
    words = "river bridge lantern orchard granite falcon meadow harbor compass velvet".split()
    return [f"document {i} page {p + 1} " + " ".join(words[(i + p + k) % len(words)] for k in range(40))
            for p in range(n)]


def build(out: Path, copies: int = 1, junk: int = 0, seed: int = 0) -> Path:
    """Write the hostile cases ``copies`` times (``c<k>-`` name prefixes) and ``junk`` extra
    junk files under ``out``; returns ``out``."""
    import pikepdf

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for k in range(copies):
        d = out / f"copy{k}"
        d.mkdir(exist_ok=True)
        _one_set(d, k, rng, pikepdf)
    junk_dir = out / "junk"
    junk_dir.mkdir(exist_ok=True)
    for j in range(junk):
        kind = j % 4
        name = f"junk{j:03d}.pdf"
        if kind == 0:
            data = rng.randbytes(rng.randrange(10, 4000))
            _expect(name, "skipped")
        elif kind == 1:
            data = b"%PDF-1.4\n" + rng.randbytes(rng.randrange(10, 4000))
            _expect(name, "skipped")
        elif kind == 2:
            data = f"<html><body>page {j}</body></html>".encode()
            _expect(name, "skipped")
        else:  # a good PDF cut at a random point
            buf = junk_dir / f"_tmp{j}.pdf"
            text_pdf(buf, _lorem(j, 2))
            raw = buf.read_bytes()
            buf.unlink()
            data = raw[: rng.randrange(len(raw) // 3, len(raw) - 10)]
            _expect(name, "either")
        (junk_dir / name).write_bytes(data)
    return out


def _one_set(d: Path, k: int, rng: random.Random, pikepdf) -> None:
    # readable documents
    for i in range(3):
        text_pdf(d / _expect(f"good{i}.pdf", "indexed"), _lorem(100 * k + i))
    # encryption
    text_pdf(d / "_plain.pdf", ["secret document"])
    with pikepdf.open(d / "_plain.pdf") as pdf:
        pdf.save(d / _expect("encrypted_user.pdf", "skipped"),
                 encryption=pikepdf.Encryption(user="pw", owner="pw"))
        pdf.save(d / _expect("encrypted_owner_only.pdf", "indexed"),
                 encryption=pikepdf.Encryption(user="", owner="pw"))
    (d / "_plain.pdf").unlink()
    # a broken but repairable xref: every offset in the table is wrong
    raw = text_pdf(d / "_x.pdf", _lorem(k, 2)).read_bytes()
    (d / "_x.pdf").unlink()
    head, sep, tail = raw.rpartition(b"startxref")
    (d / _expect("broken_xref.pdf", "indexed")).write_bytes(head + sep + b"\n123\n%%EOF\n")
    # truncated mid-stream
    raw = text_pdf(d / "_t.pdf", _lorem(k, 4)).read_bytes()
    (d / "_t.pdf").unlink()
    (d / _expect("truncated.pdf", "either")).write_bytes(raw[: len(raw) // 2])
    # zero pages
    pikepdf.new().save(d / _expect("zero_pages.pdf", "skipped"))
    # a page tree that contains itself
    text_pdf(d / _expect("page_tree_loop.pdf", "either"), _lorem(k, 2))
    with pikepdf.open(d / "page_tree_loop.pdf", allow_overwriting_input=True) as pdf:
        root = pdf.Root.Pages
        root.Kids.append(root)
        root.Count = 3
        pdf.save(d / "page_tree_loop.pdf")
    # page sizes
    text_pdf(d / _expect("poster_200in.pdf", "indexed"), ["a poster of the maximum size"],
             size=(14_400, 14_400))
    text_pdf(d / _expect("absurd_mediabox.pdf", "indexed"), ["too big to be a page"],
             size=(100_000, 100_000))  # rendered at a fraction of a dpi
    text_pdf(d / "_mixed.pdf", ["normal page one", "normal page two"])
    with pikepdf.open(d / "_mixed.pdf") as pdf:
        pdf.pages[1].MediaBox = [0, 0, 200_000, 200_000]
        pdf.save(d / _expect("one_absurd_page.pdf", "indexed"))
        pdf.pages[1].MediaBox = [0, 0, 612, 1]  # a sliver
        pdf.save(d / _expect("one_sliver_page.pdf", "indexed"))
    (d / "_mixed.pdf").unlink()
    # rotation
    for angle in (90, 180, 270):
        text_pdf(d / _expect(f"rotated_{angle}.pdf", "indexed"), [f"rotated by {angle} degrees"],
                 rotate=angle)
    # image-only pages: JPEG, CCITT; hard OCR cases
    image_pdf(d / _expect("scan_jpeg.pdf", "indexed"),
              [scan_image(f"scanned invoice number {k}\nharbor compass velvet")])
    ccitt_pdf(d / _expect("scan_ccitt.pdf", "indexed"), scan_image(f"fax cover sheet {k}"))
    image_pdf(d / _expect("scan_blank.pdf", "indexed"), [Image.new("RGB", (850, 1100), "white")])
    image_pdf(d / _expect("scan_noise.pdf", "indexed"),
              [scan_image("", noise=0.3, seed=k)])
    image_pdf(d / _expect("scan_tiny.pdf", "indexed"), [scan_image("x", size=(40, 30))],
              resolution=300)
    image_pdf(d / _expect("scan_rotated_text.pdf", "indexed"),
              [scan_image("sideways memo text", angle=90)])
    # forms, annotations, JavaScript and launch actions (never executed)
    _forms(d / _expect("forms_and_annotations.pdf", "indexed"))
    text_pdf(d / _expect("javascript_launch.pdf", "indexed"), ["a page with scripts"])
    with pikepdf.open(d / "javascript_launch.pdf", allow_overwriting_input=True) as pdf:
        pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.JavaScript,
                                                 JS=pikepdf.String("app.alert('hi')"))
        pdf.pages[0].obj.AA = pikepdf.Dictionary(O=pikepdf.Dictionary(
            S=pikepdf.Name.Launch, F=pikepdf.String("/bin/touch /tmp/agree-launched")))
        pdf.save(d / "javascript_launch.pdf")
    # a page whose content stream is garbage (the others are fine)
    text_pdf(d / "_bad.pdf", _lorem(k, 3))
    with pikepdf.open(d / "_bad.pdf") as pdf:
        pdf.pages[1].Contents = pdf.make_stream(zlib.compress(b"\x00" * 64)[:8])
        pdf.pages[1].Contents.Filter = pikepdf.Name.FlateDecode
        pdf.save(d / _expect("bad_page_stream.pdf", "either"))
    (d / "_bad.pdf").unlink()
    # not PDFs
    (d / _expect("not_a_pdf.pdf", "skipped")).write_text("just some notes, not a PDF\n")
    (d / _expect("empty.pdf", "skipped")).write_bytes(b"")
    Image.new("RGB", (50, 50), "red").save(d / _expect("png_in_disguise.pdf", "skipped"), "PNG")
    # unreadable (for anyone but root), symlink loops, non-UTF-8 names
    unreadable = text_pdf(d / _expect("unreadable.pdf", "indexed" if os.geteuid() == 0 else "skipped"),
                          ["locked away"])
    unreadable.chmod(0)
    loop = d / "loop"
    loop.mkdir(exist_ok=True)
    if not (loop / "again").is_symlink():
        (loop / "again").symlink_to("..", target_is_directory=True)
    for a, b in (("link_a.pdf", "link_b.pdf"), ("link_b.pdf", "link_a.pdf")):
        if not (d / a).is_symlink():
            (d / _expect(a, "skipped")).symlink_to(b)
    name = os.fsencode(d) + b"/caf\xe9_latin1.pdf"
    text_pdf(Path(os.fsdecode(name)), ["a file whose name is not UTF-8"])
    EXPECT["caf\udce9_latin1.pdf"] = "skipped"


def _forms(path: Path) -> None:
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path))
    c.drawString(72, 720, "application form with fields")
    c.acroForm.textfield(name="name", tooltip="Name", x=72, y=650, width=200, height=20)
    c.acroForm.checkbox(name="agree", x=72, y=600, size=16)
    c.linkURL("https://example.org", (72, 560, 200, 575))
    c.showPage()
    c.save()


if __name__ == "__main__":
    import sys

    target = build(Path(sys.argv[1]), copies=int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    print(target)
