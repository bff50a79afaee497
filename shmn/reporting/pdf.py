"""report.pdf: the same content as report.html on A4 pages, drawn with matplotlib (PdfPages).

Pure Python on purpose: the engine must write the PDF where no browser exists (a hospital PC, CI).
The layout is a cursor moving down an A4 page (210 x 297 mm); text is wrapped to the page width and a
table or image that does not fit starts a new page. Input: the context of
shmn.reporting.case_report.case_context and the PNG of the planes.
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path
from typing import Optional, Sequence

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.image import imread

from shmn.io.atomic import atomic_path

A4_INCHES = (8.27, 11.69)
MARGIN = 0.55  # inches
LINE = 0.19  # inches per 9-point line
WRAP = 110  # characters per full-width line at 9 points


class _Pages:
    """A cursor over A4 pages; ``need`` starts a new page when the next block does not fit."""

    def __init__(self, pdf: PdfPages, footer: str):
        self.pdf, self.footer, self.figure, self.number = pdf, footer, None, 0
        self.y = 0.0
        self.new_page()

    def new_page(self) -> None:
        self.close_page()
        self.number += 1
        self.figure = Figure(figsize=A4_INCHES)
        self.y = A4_INCHES[1] - MARGIN

    def close_page(self) -> None:
        if self.figure is not None:
            self.text_at(MARGIN, MARGIN * 0.6, f"{self.footer}    page {self.number}", size=7, color="#555555")
            self.pdf.savefig(self.figure)
            self.figure = None

    def need(self, inches: float) -> None:
        if self.y - inches < MARGIN:
            self.new_page()

    def text_at(self, x: float, y: float, text: str, size: float = 9, **style) -> None:
        self.figure.text(x / A4_INCHES[0], y / A4_INCHES[1], text, fontsize=size, va="top", ha="left", **style)

    def paragraph(self, text: str, size: float = 9, width: int = WRAP, **style) -> None:
        lines = textwrap.wrap(text, width=int(width * 9 / size)) or [""]
        height = len(lines) * LINE * size / 9
        self.need(height)
        self.text_at(MARGIN, self.y, "\n".join(lines), size=size, linespacing=1.25, **style)
        self.y -= height + 0.05

    def heading(self, text: str) -> None:
        self.need(0.5 + LINE * 2)
        self.y -= 0.12
        self.paragraph(text, size=12, fontweight="bold")

    def banner(self, text: str, colour: str) -> None:
        self.need(0.35)
        self.text_at(MARGIN, self.y, text, size=11, color="white", fontweight="bold",
                     bbox={"facecolor": colour, "edgecolor": colour, "pad": 4})
        self.y -= 0.4

    def table(self, header: Optional[Sequence[str]], rows: Sequence[Sequence[str]], widths: Sequence[float]) -> None:
        """Rows of cells; ``widths`` are the columns' shares of the page width."""
        usable = A4_INCHES[0] - 2 * MARGIN
        lines = ([header] if header else []) + [list(r) for r in rows]
        for index, cells in enumerate(lines):
            wrapped = [textwrap.wrap(str(c), width=max(8, int(w * WRAP))) or [""] for c, w in zip(cells, widths)]
            height = max(len(w) for w in wrapped) * LINE
            self.need(height)
            x = MARGIN
            for cell, share in zip(wrapped, widths):
                bold = header is not None and index == 0
                self.text_at(x, self.y, "\n".join(cell), fontweight="bold" if bold else "normal", linespacing=1.25)
                x += share * usable
            self.y -= height + 0.03
        self.y -= 0.08

    def image(self, png: bytes) -> None:
        pixels = imread(io.BytesIO(png), format="png")
        width = A4_INCHES[0] - 2 * MARGIN
        height = width * pixels.shape[0] / pixels.shape[1]
        self.need(height)
        ax = self.figure.add_axes([MARGIN / A4_INCHES[0], (self.y - height) / A4_INCHES[1], width / A4_INCHES[0], height / A4_INCHES[1]])
        ax.imshow(pixels, interpolation="none")
        ax.set_axis_off()
        self.y -= height + 0.1


def write_case_pdf(path: str | os.PathLike, context: dict, planes_png: Optional[bytes]) -> Path:
    """Write the case report as an A4 PDF (atomically)."""
    colour = "#b00020" if context["synthetic"] else "#8a5a00"
    with atomic_path(path) as tmp, PdfPages(str(tmp), metadata={"Title": context["title"], "Creator": f"shmn {context['engine_version']}"}) as pdf:
        pages = _Pages(pdf, f"{context['title']} — {context['use_line']}")
        pages.paragraph("SHMN — PVL, ventricles and MACS group from T2 FLAIR", size=15, fontweight="bold")
        pages.banner(context["use_line"], colour)
        pages.table(None, context["patient"] + [("Report generated", f"{context['generated']} by shmn {context['engine_version']}")], (0.3, 0.7))
        for warning in context["warnings"]:
            pages.paragraph(f"Warning: {warning}", color="#8a5a00")
        pages.heading("Images")
        if planes_png:
            pages.image(planes_png)
            pages.paragraph("Planes through the largest lesion; PVL outlined in red, lateral ventricles in blue; yellow numbers "
                            "are the lesions of the table below that cross a plane. Radiological convention.", size=8, color="#555555")
        else:
            pages.paragraph("The input image was not available when this report was written: no images.")
        pages.heading("Findings")
        macs = context["macs"]
        calibrated = macs["calibrated"]
        rows = [("MACS group (model)", macs["group"]), ("p(severe), model output", macs["probability"]),
                ("p(severe), calibrated", f"{calibrated['probability']} -> {calibrated['group']}" if calibrated else "— not computed by this model")]
        if macs.get("from_burden"):
            rows += [("p(severe), from motor-pathway burden", f"{macs['from_burden']['probability']} -> {macs['from_burden']['group']}"),
                     ("Primary MACS estimate", macs["from_burden"]["primary"])]
        pages.table(None, rows + list(context["volumes"]), (0.4, 0.6))
        if macs["burden"]:
            pages.heading("Regional lesion burden behind the MACS prediction")
            pages.table(("Region", "Left", "Right", "Total", "Unit"),
                        [(r["region"], r["left"], r["right"], r["total"], r["unit"]) for r in macs["burden"]], (0.36, 0.16, 0.16, 0.16, 0.16))
            if macs.get("from_burden"):
                pages.paragraph(f"Regions: {macs['from_burden']['note']}.", size=8, color="#555555")
        pages.heading("Lesions")
        if context["lesions"]:
            pages.table(("#", "Volume (mL)", "Centre R, A, S (mm)", "Region", "Mean p", "Uncertainty"),
                        [(r["number"], r["volume_ml"], r["centre"], r["region"], r["probability"], r["uncertain"]) for r in context["lesions"]],
                        (0.05, 0.14, 0.21, 0.36, 0.1, 0.14))
            if not context["has_lesion_uncertainty"]:
                pages.paragraph("Per-lesion probability and uncertainty: not computed by this model.", size=8, color="#555555")
        else:
            pages.paragraph("No PVL lesion detected.")
        pages.heading("Registration quality check")
        pages.paragraph(f"Registration to the MNI152 template: {context['registration_verdict']}",
                        color="#1b6e20" if context["registration_ok"] else "#b00020")
        if context["registration"]:
            pages.table(None, context["registration"], (0.6, 0.4))
        pages.heading("Model and how it was run")
        pages.table(None, context["model"], (0.2, 0.8))
        pages.paragraph(context["disclaimer"], size=8, color="#555555")
        pages.banner(context["use_line"], colour)
        pages.close_page()
    return Path(path)
