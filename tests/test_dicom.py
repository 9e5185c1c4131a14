"""DICOM uploads (issue 9): identified from bytes, frames rendered to 8 bits and OCR'd as pages,
Encapsulated PDF processed as a PDF, DICOMDIR / SR / unreadable compression rejected with their own
reasons, and no header value ever reaching an output, a log line or a notice.

Every DICOM file here is written by the test itself with pydicom (Dataset + FileMetaDataset +
save_as), carrying a fabricated patient ("Doe^Jane", an invented ID, birth date and institution),
so the tests can prove those values go nowhere.
"""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    RLELossless,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    UID,
)

from compute.runtime import LocalRuntime
from conftest import FILES, read_notices
from jobs import dicom
from jobs.convert.renditions import make_renditions
from jobs.extract.text import extract_text
from jobs.identify import identify, sniff, validate
from pipeline import repository
from pipeline.errors import (
    CorruptFile,
    DicomDirectory,
    DicomWithoutImage,
    TooLarge,
    UnsupportedDicomCompression,
)
from pipeline.settings import Settings

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MF_GREY_SC = "1.2.840.10008.5.1.4.1.1.7.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
#: Fabricated identifying values: none of them may appear in any output, log line or notice.
PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-0042-JDOE", "PatientBirthDate": "19600102",
       "InstitutionName": "Doejane Memorial Clinic", "ReferringPhysicianName": "Quill^Zebedee",
       "AccessionNumber": "ACC98765X", "StudyDescription": "Zebedee scan"}
PHI_STRINGS = [b"doe", b"jane", b"pid-0042", b"19600102", b"zebedee", b"acc98765x", b"quill"]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def text_image(lines: list[str], size: tuple[int, int] = (1400, 420), font_px: int = 44) -> np.ndarray:
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, font_px)
    for i, line in enumerate(lines):
        draw.text((60, 50 + i * int(font_px * 1.7)), line, font=font, fill=0)
    return np.asarray(img)


def base_dataset(sop_class: str = SECONDARY_CAPTURE, ts: str = ExplicitVRLittleEndian) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.Modality = "OT"
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    return ds


def image_dataset(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", frames: int | None = None,
                  sop_class: str = SECONDARY_CAPTURE, ts: str = ExplicitVRLittleEndian, signed: bool = False,
                  bits_stored: int | None = None, **elements) -> Dataset:
    """A dataset whose pixel data is ``pixels`` (frames first when ``frames``), uncompressed."""
    ds = base_dataset(sop_class, ts)
    colour = pixels.ndim == (4 if frames else 3)
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames:
        ds.NumberOfFrames = frames
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def save(ds: Dataset, path: Path, *, preamble: bool = True) -> Path:
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # a bare dataset: no preamble, no "DICM", no file meta
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


def render(path: Path, settings: Settings, index: int = 0) -> np.ndarray:
    kind = identify(path, settings)
    assert kind.kind == "dicom" and kind.format == "DICOM"
    validate(path, kind, settings)
    image = dicom.frame_image(path, index, settings)
    assert image.info == {} and image.mode in ("L", "RGB")
    return np.asarray(image)


def ramp(dtype=np.uint16, high: int = 4095) -> np.ndarray:
    """64x256: columns go 0..high."""
    row = np.linspace(0, high, 256).round().astype(dtype)
    return np.tile(row, (64, 1))


# ---------------------------------------------------------------------------------------------
# Identification
# ---------------------------------------------------------------------------------------------

def test_sniffed_from_bytes_with_and_without_preamble(tmp_path, settings):
    with_preamble = save(image_dataset(ramp()), tmp_path / "a.bin")
    bare = save(image_dataset(ramp()), tmp_path / "b.bin", preamble=False)
    assert with_preamble.read_bytes()[128:132] == b"DICM"
    assert bare.read_bytes()[:2] == b"\x08\x00"
    for path in (with_preamble, bare):
        assert identify(path, settings).format == "DICOM"
        assert validate(path, identify(path, settings), settings) == 1
    # A TIFF header in the preamble (dual-personality files) does not make it a TIFF.
    data = bytearray(with_preamble.read_bytes())
    data[:4] = b"II*\x00"
    assert sniff(bytes(data[:2048])).format == "DICOM"
    assert sniff(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100") is not None
    assert sniff(b"\x08\x00\x99\x77" + bytes(200)) is None


# ---------------------------------------------------------------------------------------------
# Photometric interpretations, windows and LUTs
# ---------------------------------------------------------------------------------------------

def test_monochrome2_window_from_the_file(tmp_path, settings):
    ds = image_dataset(ramp(), BitsStored=12, WindowCenter=1024, WindowWidth=1024)
    out = render(save(ds, tmp_path / "w.dcm"), settings)
    values = ramp()[0]
    row = out[0]
    assert row[values < 500].max() == 0 and row[values > 1540].min() == 255
    mid = int(np.argmin(abs(values - 1024)))
    assert 110 <= row[mid] <= 145
    assert np.all(np.diff(row.astype(int)) >= 0)  # monotonic


def test_monochrome1_is_inverted(tmp_path, settings):
    out = render(save(image_dataset(ramp(), photometric="MONOCHROME1", BitsStored=12), tmp_path / "m1.dcm"), settings)
    assert out[0, 0] == 255 and out[0, -1] == 0  # the lowest value is white in MONOCHROME1
    assert np.all(np.diff(out[0].astype(int)) <= 0)


def test_percentile_window_when_the_file_has_none(tmp_path, settings):
    pixels = np.full((100, 100), 1000, np.uint16)
    pixels[:, 50:] = 1400  # the image uses 1000..1400 of a 16-bit range
    pixels[0, 0] = 65535  # one hot pixel must not squash the window
    out = render(save(image_dataset(pixels), tmp_path / "p.dcm"), settings)
    assert out[50, 10] == 0 and out[50, 90] == 255


def test_rescale_and_window_of_a_signed_ct_image(tmp_path, settings):
    # Stored values 0..2000 with intercept -1024 are -1024..976 HU; a soft-tissue window 40/400.
    stored = np.tile(np.linspace(0, 2000, 200).round().astype(np.int16), (20, 1))
    ds = image_dataset(stored, sop_class=CT_IMAGE, signed=True, RescaleSlope=1, RescaleIntercept=-1024,
                       WindowCenter=40, WindowWidth=400)
    out = render(save(ds, tmp_path / "ct.dcm"), settings)
    hu = stored[0].astype(float) - 1024
    assert out[0][hu < -160].max() == 0 and out[0][hu > 240].min() == 255
    assert 100 <= out[0][int(np.argmin(abs(hu - 40)))] <= 155


def test_voi_lut_sequence(tmp_path, settings):
    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 8]
    lut.LUTData = np.arange(255, -1, -1, dtype=np.uint16).tobytes()  # inverting, over stored values 0..255
    ds = image_dataset(ramp(np.uint16, 255), BitsStored=8, VOILUTSequence=Sequence([lut]))
    out = render(save(ds, tmp_path / "lut.dcm"), settings)
    assert out[0, 0] == 255 and out[0, -1] == 0


def test_enhanced_multiframe_per_frame_window(tmp_path, settings):
    pixels = np.stack([ramp(), ramp()])
    groups = []
    for center in (500, 3500):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, 200
        item = Dataset()
        item.FrameVOILUTSequence = Sequence([voi])
        groups.append(item)
    ds = image_dataset(pixels, frames=2, sop_class=MF_GREY_SC, BitsStored=12,
                       PerFrameFunctionalGroupsSequence=Sequence(groups))
    path = save(ds, tmp_path / "mf.dcm")
    first, second = render(path, settings, 0), render(path, settings, 1)
    values = ramp()[0]
    assert first[0][values > 700].min() == 255
    assert second[0][(values > 700) & (values < 3300)].max() == 0 and second[0][values > 3700].min() == 255


def test_float_pixel_data(tmp_path, settings):
    values = np.tile(np.linspace(-1, 1, 64, dtype=np.float32), (16, 1))
    ds = image_dataset(np.zeros((16, 64), np.uint8), sop_class="1.2.840.10008.5.1.4.1.1.30")  # parametric map
    for keyword in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    out = render(save(ds, tmp_path / "float.dcm"), settings)
    assert out[0, 0] == 0 and out[0, -1] == 255 and np.all(np.diff(out[0].astype(int)) >= 0)


def test_rgb_and_planar_configuration(tmp_path, settings):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (200, 30, 30)
    rgb[:, 16:32] = (30, 200, 30)
    rgb[:, 32:] = (30, 30, 200)
    out = render(save(image_dataset(rgb, photometric="RGB"), tmp_path / "rgb.dcm"), settings)
    assert out.shape == (32, 48, 3) and np.array_equal(out, rgb)
    planar = image_dataset(rgb, photometric="RGB")
    planar.PlanarConfiguration = 1
    planar.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    assert np.array_equal(render(save(planar, tmp_path / "planar.dcm"), settings), rgb)


def test_uncompressed_ybr_full_is_converted(tmp_path, settings):
    from pydicom.pixels import convert_color_space

    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[:, :16] = (210, 60, 40)
    rgb[:, 16:] = (20, 90, 200)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    out = render(save(image_dataset(ybr, photometric="YBR_FULL"), tmp_path / "ybr.dcm"), settings)
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 2


def test_palette_colour(tmp_path, settings):
    indexes = np.tile(np.arange(4, dtype=np.uint8).repeat(8), (8, 1))  # 8x32, values 0..3
    ds = image_dataset(indexes, photometric="PALETTE COLOR")
    colours = [(65535, 0, 0), (0, 65535, 0), (0, 0, 65535), (65535, 65535, 65535)]
    for i, name in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData",
                np.array([c[i] for c in colours], np.uint16).tobytes())
    out = render(save(ds, tmp_path / "pal.dcm"), settings)
    assert out.shape == (8, 32, 3)
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 9]) == (0, 255, 0)
    assert tuple(out[0, 17]) == (0, 0, 255) and tuple(out[0, 25]) == (255, 255, 255)


# ---------------------------------------------------------------------------------------------
# Transfer syntaxes
# ---------------------------------------------------------------------------------------------

def _grey_text() -> np.ndarray:
    return text_image(["Metformin 500 mg"], size=(700, 160), font_px=48)


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                                RLELossless, JPEG2000Lossless, JPEGBaseline8Bit])
def test_transfer_syntaxes(ts, tmp_path, settings):
    pixels = _grey_text()
    if ts == JPEGBaseline8Bit:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        ds = image_dataset(pixels, ts=ts)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    elif ts in (RLELossless, JPEG2000Lossless):
        ds = image_dataset(pixels)
        ds.compress(ts)
    else:
        ds = image_dataset(pixels, ts=ts)
    path = save(ds, tmp_path / "ts.dcm")
    assert UID(str(dicom.read_dataset(path).file_meta.TransferSyntaxUID)) == ts
    out = render(path, settings)
    tolerance = 12 if ts == JPEGBaseline8Bit else 0
    assert np.abs(out.astype(int) - pixels.astype(int)).mean() <= tolerance


LOSSLESS_PAIRS = [  # pydicom's own sample files, read where pydicom installed them (never copied here)
    ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),  # JPEG-LS lossless (pylibjpeg-libjpeg)
    ("MR_small.dcm", "MR_small_jp2klossless.dcm"),  # JPEG 2000 lossless
    ("MR_small.dcm", "MR_small_RLE.dcm"),
    ("MR_small.dcm", "MR_small_bigendian.dcm"),  # explicit VR big endian
    ("SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm"),  # RGB: RLE and JPEG lossless (process 14 SV1)
]


@pytest.mark.parametrize("reference,compressed", LOSSLESS_PAIRS)
def test_pydicom_lossless_samples_render_like_their_uncompressed_reference(reference, compressed, settings):
    from pydicom.data import get_testdata_files

    found = [get_testdata_files(name) for name in (reference, compressed)]  # local search, no download
    if not all(found):
        pytest.skip("pydicom's sample files are not installed")
    paths = [f[0] for f in found]
    a, b = (render(Path(p), settings) for p in paths)
    assert a.shape == b.shape and a.std() > 5
    assert np.array_equal(a, b)


def test_ybr_jpeg_colour_is_converted_to_rgb(tmp_path, settings):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :32] = (220, 40, 40)
    rgb[:, 32:] = (40, 40, 220)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, subsampling=0)
    ds = image_dataset(rgb, photometric="YBR_FULL_422", ts=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    out = render(save(ds, tmp_path / "ybr.dcm"), settings)
    assert np.abs(out[32, 10].astype(int) - (220, 40, 40)).max() <= 12
    assert np.abs(out[32, 50].astype(int) - (40, 40, 220)).max() <= 12


# ---------------------------------------------------------------------------------------------
# Rejections, each with its own reason
# ---------------------------------------------------------------------------------------------

def test_structured_report_is_dicom_without_image(tmp_path, settings):
    ds = base_dataset(BASIC_TEXT_SR)
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    path = save(ds, tmp_path / "sr.dcm")
    with pytest.raises(DicomWithoutImage) as err:
        validate(path, identify(path, settings), settings)
    assert err.value.reason_code == "dicom_without_image"


def test_dicomdir_alone_is_its_own_rejection(tmp_path, settings):
    ds = base_dataset("1.2.840.10008.1.3.10")
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality"):
        delattr(ds, kw)
    ds.FileSetID = "DISC"
    record = Dataset()
    record.DirectoryRecordType = "PATIENT"
    record.PatientName = "Doe^Jane"
    ds.DirectoryRecordSequence = Sequence([record])
    path = save(ds, tmp_path / "DICOMDIR")
    with pytest.raises(DicomDirectory) as err:
        validate(path, identify(path, settings), settings)
    assert err.value.reason_code == "dicomdir" and "doe" not in err.value.message.lower()


def test_unreadable_compression_is_rejected_precisely(tmp_path, settings):
    ds = image_dataset(_grey_text(), ts="1.2.840.10008.1.2.4.102")  # MPEG-4 AVC/H.264 video
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01" + bytes(64)])
    ds["PixelData"].VR = "OB"
    path = save(ds, tmp_path / "video.dcm")
    with pytest.raises(UnsupportedDicomCompression) as err:
        validate(path, identify(path, settings), settings)
    assert err.value.reason_code == "unsupported_dicom_compression"
    assert "MPEG" in err.value.message and "doe" not in err.value.message.lower()


def test_damaged_pixel_data_is_corrupt(tmp_path, settings):
    ds = image_dataset(_grey_text())
    ds.PixelData = ds.PixelData[:1000]  # far fewer bytes than Rows x Columns
    path = save(ds, tmp_path / "short.dcm")
    kind = identify(path, settings)
    validate(path, kind, settings)
    with pytest.raises(CorruptFile):
        make_renditions(path, kind, tmp_path / "out", settings)


def rle_overrunning_segments(path: Path) -> Path:
    """16-bit RLE whose two segments decode to more bytes than the frame holds: pylibjpeg-rle's Rust
    decoder panics (pyo3 PanicException, a BaseException that ``except Exception`` misses). Found by
    the crash hunt over mutated pydicom test files; the worker used to crash (retried, then FAILED)."""
    ds = image_dataset(np.zeros((8, 8), np.uint16), ts=RLELossless)
    segments = [b"\x81\x00" * 2, b"\x81\x00" * 2]  # each: two replicate runs of 128 bytes, for 64
    header = struct.pack("<16L", 2, 64, 64 + len(segments[0]), *([0] * 13))
    ds.PixelData = encapsulate([header + b"".join(segments)])
    ds["PixelData"].VR = "OB"
    return save(ds, path)


def test_rle_decoder_panic_is_corrupt_file(tmp_path, settings):
    path = rle_overrunning_segments(tmp_path / "rle.dcm")
    kind = identify(path, settings)
    validate(path, kind, settings)
    with pytest.raises(CorruptFile):
        dicom.frame_image(path, 0, settings)


def test_unknown_transfer_syntax_is_unsupported(tmp_path, settings):
    path = save(image_dataset(_grey_text()), tmp_path / "ts.dcm")
    data = path.read_bytes()
    assert data.count(b"1.2.840.10008.1.2.1\x00") == 1
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.9\x00"))  # no such syntax
    with pytest.raises(UnsupportedDicomCompression) as err:
        validate(path, identify(path, settings), settings)
    assert "unknown or private" in err.value.message


def test_too_many_frames(tmp_path):
    small = Settings(max_pages=2)
    path = save(image_dataset(np.zeros((3, 8, 8), np.uint8), frames=3), tmp_path / "mf.dcm")
    with pytest.raises(TooLarge):
        validate(path, identify(path, small), small)


# ---------------------------------------------------------------------------------------------
# Stage outputs: text, pages, renditions
# ---------------------------------------------------------------------------------------------

def test_encapsulated_pdf_is_processed_as_its_pdf(tmp_path, settings):
    ds = base_dataset("1.2.840.10008.5.1.4.1.1.104.1")
    ds.Modality = "DOC"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf = (FILES / "digital_referral.pdf").read_bytes()
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    path = save(ds, tmp_path / "epdf.dcm")
    kind = identify(path, settings)
    assert validate(path, kind, settings) == 2
    out = tmp_path / "out"
    out.mkdir()
    result = extract_text(path, kind, out, settings)
    pages = json.loads((out / "pages.json").read_text())
    assert [p["source"] for p in pages] == ["text-layer", "text-layer"]
    assert "metformin 500 mg" in (out / "text.txt").read_text().lower()
    assert len(result.pages) == 2
    names = {r.name for r in make_renditions(path, kind, out, settings)}
    assert "thumbnail" in names


# ---------------------------------------------------------------------------------------------
# End to end: the pipeline, its outputs, logs and notices
# ---------------------------------------------------------------------------------------------

def _run(tmp_path: Path, paths: list[Path]) -> tuple[Settings, dict[str, str]]:
    settings = Settings.load(data_dir=tmp_path / "data", workers=2)
    with LocalRuntime(settings) as runtime:
        ids = {p.name: runtime.submit(p).document_id for p in paths}
        runtime.run_until_final(list(ids.values()), max_seconds=600)
    return settings, ids


def test_secondary_capture_scan_gives_text_and_no_header_value_anywhere(tmp_path):
    scan = text_image(["Referral letter", "Patient was started on metformin 500 mg",
                       "twice daily for type 2 diabetes mellitus."])
    path = save(image_dataset(scan), tmp_path / "scan.dcm")
    raw = path.read_bytes()
    assert b"Doe^Jane" in raw and b"PID-0042-JDOE" in raw  # the header really carries them
    settings, ids = _run(tmp_path, [path])
    doc = repository.get_document(settings, ids["scan.dcm"])
    assert doc.status == "COMPLETED" and doc.file_format == "DICOM" and doc.page_count == 1
    results = settings.data_dir
    texts = [p for p in results.rglob("text.txt")]
    assert texts and "metformin 500 mg" in texts[0].read_text().lower()
    entities = json.loads(next(results.rglob("entities.json")).read_text())
    assert any(e["Category"] == "MEDICATION" and e["Text"].lower() == "metformin" for e in entities["Entities"])
    manifest = json.loads(next(results.rglob("manifest.json")).read_text())
    assert manifest["type"]["format"] == "DICOM"
    assert {"renditions/thumbnail", "text", "pages"} <= set(manifest["outputs"])
    # Nothing of the header anywhere but in the stored original: outputs, renditions, database,
    # worker logs, notices.
    checked = 0
    for f in results.rglob("*"):
        if not f.is_file() or f.read_bytes() == raw:
            continue
        data = f.read_bytes().lower()
        for value in PHI_STRINGS:
            assert value not in data, (f.relative_to(results), value)
        checked += 1
    assert checked >= 10
    assert any(results.rglob("logs/*.log")) and read_notices(settings)


def test_multiframe_frames_become_pages(tmp_path):
    pages = [["Page one: aspirin 81 mg daily"], ["Page two: lisinopril 10 mg daily"],
             ["Page three: atorvastatin 20 mg"]]
    pixels = np.stack([text_image(lines, size=(1300, 200)) for lines in pages])
    path = save(image_dataset(pixels, frames=3, sop_class=MF_GREY_SC), tmp_path / "mf.dcm")
    settings, ids = _run(tmp_path, [path])
    doc = repository.get_document(settings, ids["mf.dcm"])
    assert doc.status == "COMPLETED" and doc.page_count == 3
    text = next(settings.data_dir.rglob("text.txt")).read_text().lower()
    parts = text.split("\f")
    assert len(parts) == 3
    for part, word in zip(parts, ("aspirin", "lisinopril", "atorvastatin")):
        assert word in part
    pages_json = json.loads(next(settings.data_dir.rglob("pages.json")).read_text())
    assert [p["source"] for p in pages_json] == ["ocr"] * 3 and all(p["dpi"] is None or p["dpi"] > 0
                                                                  for p in pages_json)


def test_rejections_are_final_on_the_first_attempt(tmp_path):
    sr = base_dataset(BASIC_TEXT_SR)
    sr.Modality = "SR"
    sr_path = save(sr, tmp_path / "sr.dcm")
    video = image_dataset(_grey_text(), ts="1.2.840.10008.1.2.4.102")
    video.PixelData = encapsulate([bytes(64)])
    video["PixelData"].VR = "OB"
    video_path = save(video, tmp_path / "video.dcm")
    rle_path = rle_overrunning_segments(tmp_path / "rle.dcm")  # used to crash the worker (3 attempts, FAILED)
    settings, ids = _run(tmp_path, [sr_path, video_path, rle_path])
    expected = {"sr.dcm": "dicom_without_image", "video.dcm": "unsupported_dicom_compression",
                "rle.dcm": "corrupt_file"}
    notices = {n["document_id"]: n for n in read_notices(settings)}
    for name, reason in expected.items():
        doc = repository.get_document(settings, ids[name])
        assert doc.status == "REJECTED"
        assert notices[ids[name]]["reason_code"] == reason
        jobs = repository.jobs_for(settings, doc.id, doc.attempt)
        assert all(j.tries <= 1 for j in jobs)
    for f in settings.data_dir.rglob("*"):
        if f.is_file() and f.suffix in (".log", ".json", ".jsonl"):
            data = f.read_bytes().lower()
            assert not any(v in data for v in PHI_STRINGS), f.name
