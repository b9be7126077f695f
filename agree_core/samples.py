"""Sample PDFs of our own for the demo and the tests: a report with a chart and a table,
a slide deck, and a scanned memo with no text layer. Needs reportlab (the ``samples`` extra).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["build_samples", "SAMPLE_QUESTIONS", "write_report", "write_slides", "write_scan"]

# (question, file, page) for the demo: what a reader of these documents would ask.
SAMPLE_QUESTIONS = [
    ("How much revenue did the cooperative make in the third quarter?", "report.pdf", 2),
    ("Which solar site produced the most electricity?", "report.pdf", 3),
    ("What battery storage capacity was installed?", "report.pdf", 1),
    ("What are the main risks of moving the data platform to the cloud?", "slides.pdf", 4),
    ("When will the migration be finished?", "slides.pdf", 3),
    ("Where are visitors allowed to park?", "scan.pdf", 1),
]


def _reportlab():
    try:
        import reportlab  # noqa: F401
    except ImportError as e:
        raise ImportError("sample PDFs need reportlab: pip install 'agree[samples]'") from e


def write_report(path: Path) -> Path:
    """A three-page annual report: text, a quarterly table, a bar chart."""
    _reportlab()
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.shapes import Drawing, String
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import letter
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    ss = getSampleStyleSheet()
    body = ss["BodyText"]
    story = [
        Paragraph("Northwind Solar Cooperative: Annual Report 2025", ss["Title"]),
        Paragraph("Letter from the board", ss["Heading2"]),
        Paragraph("The cooperative completed its second full year of operation. Membership grew "
                  "to 1,240 households, and the board approved a new maintenance contract for "
                  "all three sites.", body),
        Paragraph("Battery storage", ss["Heading2"]),
        Paragraph("In March we commissioned a lithium iron phosphate battery bank with a usable "
                  "capacity of 2.4 megawatt hours at the Millbrook site. It shifts midday "
                  "production into the evening peak and cut grid purchases by 18 percent.", body),
        Paragraph("Safety", ss["Heading2"]),
        Paragraph("No lost-time incidents were recorded. All technicians renewed their working "
                  "at height certification.", body),
        PageBreak(),
        Paragraph("Financial results", ss["Heading1"]),
        Paragraph("Revenue by quarter, in thousands of euros. The third quarter was the strongest, "
                  "driven by the summer feed-in tariff.", body),
        Spacer(1, 12),
    ]
    table = Table([
        ["Quarter", "Revenue (kEUR)", "Operating costs (kEUR)", "Net (kEUR)"],
        ["Q1 2025", "412", "301", "111"],
        ["Q2 2025", "598", "322", "276"],
        ["Q3 2025", "731", "340", "391"],
        ["Q4 2025", "455", "318", "137"],
    ])
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
    ]))
    story += [table, Spacer(1, 12),
              Paragraph("Membership fees are reported separately and are not part of revenue.", body),
              PageBreak(),
              Paragraph("Energy production by site", ss["Heading1"])]
    drawing = Drawing(400, 260)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 50, 50, 320, 170
    chart.data = [(1830, 2960, 1415)]
    chart.categoryAxis.categoryNames = ["Millbrook", "Hollow Creek", "Ashford"]
    chart.valueAxis.valueMin = 0
    chart.bars[0].fillColor = colors.HexColor("#f2a541")
    drawing.add(chart)
    drawing.add(String(60, 235, "Electricity generated in 2025 (MWh)", fontSize=12))
    story += [drawing,
              Paragraph("Hollow Creek, the largest array, generated the most electricity, ahead "
                        "of Millbrook and Ashford.", body)]
    SimpleDocTemplate(str(path), pagesize=letter, title="Northwind Solar Annual Report").build(story)
    return path


def write_slides(path: Path) -> Path:
    """A five-slide landscape deck about a data platform migration."""
    _reportlab()
    from reportlab.lib.pagesizes import landscape, letter
    from reportlab.pdfgen import canvas

    slides = [
        ("Project Heron", ["Moving the data platform to the cloud", "Steering committee, 2025"]),
        ("Why migrate", ["On-premise cluster reaches end of support", "Nightly jobs miss their window",
                         "Storage costs grow 30% a year"]),
        ("Timeline", ["Phase 1: inventory and pilot (January to March)",
                      "Phase 2: move batch pipelines (April to August)",
                      "Phase 3: decommission the old cluster, done by November 2025"]),
        ("Risks", ["Data egress charges exceed the budget", "Staff need training on new tooling",
                   "Vendor lock-in for the managed warehouse"]),
        ("Budget", ["Total 1.2 million euros over two years", "Training: 90,000 euros",
                    "Contingency: 15 percent"]),
    ]
    w, h = landscape(letter)
    c = canvas.Canvas(str(path), pagesize=(w, h))
    for title, bullets in slides:
        c.setFillColorRGB(0.12, 0.24, 0.45)
        c.rect(0, h - 110, w, 110, fill=1, stroke=0)
        c.setFillColorRGB(1, 1, 1)
        c.setFont("Helvetica-Bold", 40)
        c.drawString(50, h - 75, title)
        c.setFillColorRGB(0, 0, 0)
        c.setFont("Helvetica", 24)
        for i, b in enumerate(bullets):
            c.drawString(70, h - 180 - i * 50, "\u2022 " + b)
        c.showPage()
    c.save()
    return path


def write_scan(path: Path) -> Path:
    """A scanned memo: one page image, no text layer (needs OCR to be searchable)."""
    lines = ["MEMO: Visitor parking", "",
             "From March 1st, visitors park in the north lot",
             "next to the loading dock, not in front of the",
             "main entrance. Spaces 40 to 55 are reserved",
             "for visitors and must be booked at reception.",
             "Staff badges are not valid for the visitor lot."]
    img = Image.new("L", (1275, 1650), 250)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=34)
    for i, line in enumerate(lines):
        draw.text((110, 150 + i * 62), line, fill=25, font=font)
    img = img.rotate(0.6, fillcolor=250, resample=Image.Resampling.BICUBIC)
    img = img.filter(ImageFilter.GaussianBlur(0.7))
    img.convert("RGB").save(path, "PDF", resolution=150.0)
    return path


def build_samples(directory: str | Path) -> list[Path]:
    """Write the three sample PDFs into ``directory`` and return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [write_report(directory / "report.pdf"), write_slides(directory / "slides.pdf"),
            write_scan(directory / "scan.pdf")]
