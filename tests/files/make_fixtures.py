"""Write the extract-stage test fixtures into tests/files/ (deterministic; outputs are committed).

Run from the repository root:  python tests/files/make_fixtures.py

Every text in these files is fabricated: no real patient, clinician or institution. Nothing here
needs Ghostscript or a PDF library for the born-digital file: it is written as PDF syntax by hand
(Helvetica base font, correct xref), so the text layer is exactly what we wrote.
Needs: Pillow, numpy, OpenCV, pillow_heif and the ``qpdf`` program (encrypted and mixed fixtures).
"""
from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"

PAGE1 = [
    "Northfield Family Practice - Referral Letter",
    "Date: 14 March 2024",
    "Re: Jane Example, DOB 01/02/1960, MRN 0000000",
    "Dear Dr. Sample,",
    "Thank you for seeing this 64 year old woman.",
    "Patient was started on metformin 500 mg by mouth",
    "twice daily for type 2 diabetes mellitus.",
    "No history of hypertension. Denies chest pain.",
    "HbA1c was 8.1 percent on the last blood test.",
]
PAGE2 = [
    "Current medications",
    "1. Metformin 500 mg PO BID",
    "2. Atorvastatin 20 mg PO once daily at night",
    "3. Aspirin 81 mg PO daily",
    "Allergies: penicillin (rash).",
    "Plan: review renal function and repeat HbA1c",
    "in three months. Kind regards, Dr. Placeholder",
]
SCAN_LINES = [
    "Discharge Summary",
    "Patient was started on metformin 500 mg",
    "by mouth twice daily for type 2 diabetes",
    "mellitus. No history of hypertension.",
    "Follow up with cardiology in two weeks.",
]
PHOTO_LINES = [
    "Prescription",
    "Amoxicillin 500 mg capsules",
    "Take one capsule three times daily",
    "for seven days. Diagnosis: otitis media.",
    "Refills: none",
]
SCREENSHOT_LINES = [
    "Lab results portal",
    "Glucose (fasting): 7.2 mmol/L  HIGH",
    "Creatinine: 88 umol/L  normal",
    "Hemoglobin A1c: 8.1 %  HIGH",
    "Comment: consistent with diabetes mellitus.",
]
TIFF_PAGES = [
    ["Fax cover sheet", "Pages: 2", "Urgent: insulin dosing query"],
    ["Insulin glargine 10 units", "subcutaneous at bedtime", "Hypoglycemia: none reported"],
]
HEIC_LINES = ["Insurance card", "Member ID 000-EXAMPLE", "Plan: Gold PPO", "Copay: 20 dollars"]


# --------------------------------------------------------------------------------------------
# A born-digital PDF written by hand
# --------------------------------------------------------------------------------------------

def pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def page_stream(lines: list[str], *, title_size: int = 16, size: int = 12) -> bytes:
    """A content stream that draws one line per ``Td`` step in Helvetica (first line larger)."""
    ops = ["BT", f"/F1 {title_size} Tf", "72 720 Td", f"({pdf_escape(lines[0])}) Tj", f"/F1 {size} Tf"]
    for line in lines[1:]:
        ops += ["0 -24 Td", f"({pdf_escape(line)}) Tj"]
    ops.append("ET")
    return ("\n".join(ops) + "\n").encode("latin-1")


def build_text_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF 1.4 with one Helvetica font, one content stream per page and an xref."""
    n = len(pages)
    font_id = 3 + 2 * n
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        ("<< /Type /Pages /Kids [" + " ".join(f"{3 + 2 * i} 0 R" for i in range(n)) + f"] /Count {n} >>").encode(),
    ]
    for i, lines in enumerate(pages):
        page_id, content_id = 3 + 2 * i, 4 + 2 * i
        objects.append((f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                        f"/Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {content_id} 0 R >>").encode())
        stream = page_stream(lines)
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"endstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    return write_pdf(objects)


def write_pdf(objects: list[bytes]) -> bytes:
    """Serialise numbered objects (1..n, object 1 the catalog) with a correct xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{num} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n".encode())
    out.write(b"0000000000 65535 f \n")
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Raster pages
# --------------------------------------------------------------------------------------------

def render_lines(lines: list[str], *, width: int, height: int, font_px: int, margin: int,
                 ink: int = 20, paper: int = 255, spacing: float = 1.6) -> Image.Image:
    """Grayscale page with ``lines`` in DejaVu Sans (title bold)."""
    img = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(img)
    y = margin
    for i, line in enumerate(lines):
        font = ImageFont.truetype(FONT_BOLD if i == 0 else FONT, font_px)
        draw.text((margin, y), line, font=font, fill=ink)
        y += int(font_px * spacing)
    return img


def add_noise(gray: np.ndarray, rng: np.random.Generator, sigma: float, speckles: float) -> np.ndarray:
    noisy = gray.astype(np.float32) + rng.normal(0, sigma, gray.shape)
    mask = rng.random(gray.shape) < speckles
    noisy[mask] = rng.choice([0, 255], size=int(mask.sum()))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def scan_raster() -> np.ndarray:
    """The discharge summary as a scanner would see it: 1.5 degrees off, with noise."""
    rng = np.random.default_rng(1)
    page = render_lines(SCAN_LINES, width=1500, height=700, font_px=42, margin=80)
    page = page.rotate(1.5, resample=Image.BICUBIC, fillcolor=255, expand=False)
    return add_noise(np.asarray(page), rng, sigma=6, speckles=0.002)


def make_scanned_pdf(path: Path) -> None:
    """Text at ~300 dpi, rotated 1.5 degrees, with scanner noise; a PDF with no text layer."""
    fixed = time.gmtime(1710417600)  # 2024-03-14 12:00 UTC: no wall-clock date in the file
    Image.fromarray(scan_raster()).save(path, "PDF", resolution=300.0, quality=40, creationDate=fixed,
                                        modDate=fixed)


def make_scan_with_page_number(path: Path) -> None:
    """A scanned page whose only text layer is a stamped page number: must still be OCR'd."""
    raster = Image.fromarray(scan_raster())
    buf = io.BytesIO()
    raster.save(buf, "JPEG", quality=40)
    jpeg = buf.getvalue()
    w_pt, h_pt = raster.width * 72 / 300, raster.height * 72 / 300
    content = (f"q {w_pt:.2f} 0 0 {h_pt:.2f} 0 0 cm /Im1 Do Q\n"
               f"BT /F1 8 Tf {w_pt / 2:.2f} 6 Td (3) Tj ET\n").encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w_pt:.2f} {h_pt:.2f}] "
         f"/Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> /Contents 4 0 R >>").encode(),
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"endstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        (f"<< /Type /XObject /Subtype /Image /Width {raster.width} /Height {raster.height} "
         f"/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /DCTDecode /Length {len(jpeg)} >>\nstream\n"
         ).encode() + jpeg + b"\nendstream",
    ]
    path.write_bytes(write_pdf(objects))


def make_phone_photo(path: Path) -> None:
    """A page photographed on a desk: perspective, uneven light, sideways + EXIF Orientation 6."""
    rng = np.random.default_rng(2)
    page = np.asarray(render_lines(PHOTO_LINES, width=900, height=560, font_px=36, margin=60, paper=235, ink=30))
    h, w = page.shape
    canvas_w, canvas_h = 1100, 800
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[120, 110], [985, 80], [1010, 700], [95, 690]])
    m = cv2.getPerspectiveTransform(src, dst)
    desk = np.full((canvas_h, canvas_w), 70, np.uint8)
    warped = cv2.warpPerspective(page, m, (canvas_w, canvas_h), flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = cv2.warpPerspective(np.full_like(page, 255), m, (canvas_w, canvas_h))
    photo = np.where(mask > 127, warped, desk).astype(np.float32)
    xx, yy = np.meshgrid(np.linspace(0, 1, canvas_w), np.linspace(0, 1, canvas_h))
    light = 1.0 - 0.45 * (xx * 0.7 + yy * 0.3)  # shadow towards the lower right
    photo = add_noise(photo * light, rng, sigma=4, speckles=0.0)
    rgb = Image.fromarray(photo).convert("RGB")
    stored = rgb.rotate(90, expand=True)  # the camera was held sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # display needs a 90 degree clockwise turn
    stored.save(path, "JPEG", quality=60, exif=exif)


def make_screenshot(path: Path) -> None:
    """A small anti-aliased colour screenshot of a lab portal (~96 dpi, small text)."""
    img = Image.new("RGB", (560, 200), (250, 250, 252))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 560, 30], fill=(30, 80, 160))
    draw.text((10, 6), SCREENSHOT_LINES[0], font=ImageFont.truetype(FONT_BOLD, 15), fill=(255, 255, 255))
    font = ImageFont.truetype(FONT, 14)
    for i, line in enumerate(SCREENSHOT_LINES[1:]):
        draw.text((10, 45 + i * 36), line, font=font, fill=(40, 40, 40))
    img.save(path, "PNG", optimize=True)


def make_tiff(path: Path) -> None:
    """Two bilevel Group 4 frames, one page of text each."""
    frames = [render_lines(lines, width=1200, height=420, font_px=40, margin=60).point(lambda v: 255 if v > 128 else 0)
              .convert("1") for lines in TIFF_PAGES]
    frames[0].save(path, "TIFF", save_all=True, append_images=frames[1:], compression="group4", dpi=(300, 300))


def make_heic(path: Path) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    img = render_lines(HEIC_LINES, width=800, height=420, font_px=38, margin=50, paper=245).convert("RGB")
    img.save(path, "HEIF", quality=60)


def make_lying_extension(path: Path) -> None:
    """A JPEG named .pdf: the pipeline must trust the bytes, not the name."""
    img = render_lines(["Referral note", "Chronic kidney disease stage 3", "Lisinopril 10 mg daily"],
                       width=900, height=330, font_px=40, margin=50).convert("RGB")
    img.save(path, "JPEG", quality=70)


def make_corrupt(path: Path, good: bytes) -> None:
    """A PDF header followed by garbled bytes: pdfium cannot find any object."""
    rng = np.random.default_rng(3)
    garbage = bytes(rng.integers(0, 256, size=2000, dtype=np.uint8))
    path.write_bytes(good[:9] + garbage)


def make_mixed(path: Path, digital: Path, scanned: Path) -> None:
    """Page 1 from the born-digital PDF, page 2 from the scanned one (one page must be OCR'd)."""
    subprocess.run(["qpdf", "--static-id", "--empty", "--pages", str(digital), "1", str(scanned), "1", "--",
                    str(path)], check=True)


def main() -> None:
    digital = HERE / "digital_referral.pdf"
    good = build_text_pdf([PAGE1, PAGE2])
    digital.write_bytes(good)
    make_scanned_pdf(HERE / "scanned_discharge.pdf")
    make_scan_with_page_number(HERE / "scanned_with_page_number.pdf")
    make_phone_photo(HERE / "phone_photo_exif6.jpg")
    make_screenshot(HERE / "screenshot_labs.png")
    make_tiff(HERE / "fax_two_pages.tiff")
    make_heic(HERE / "insurance_card.heic")
    make_lying_extension(HERE / "lying_extension.pdf")
    make_corrupt(HERE / "corrupt.pdf", good)
    make_mixed(HERE / "mixed_digital_scanned.pdf", digital, HERE / "scanned_discharge.pdf")
    (HERE / "empty.pdf").write_bytes(b"")
    encrypted = HERE / "encrypted.pdf"
    encrypted.unlink(missing_ok=True)
    subprocess.run(["qpdf", "--static-id", "--static-aes-iv", "--encrypt", "user-secret", "owner-secret", "128",
                    "--use-aes=y", "--",
                    str(digital), str(encrypted)], check=True)
    for f in sorted(HERE.iterdir()):
        if f.suffix != ".py" and f.name != "README.md" and f.is_file():
            print(f"{f.name:32s} {f.stat().st_size:8d} bytes")


if __name__ == "__main__":
    main()
