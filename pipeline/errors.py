"""Errors and exit codes.

Every error class carries its exit code and a fix-it sentence, OCRmyPDF-style; the code becomes a
process exit status only at the worker and CLI boundary. Messages never contain PHI: no file names,
no object keys, no extracted text. Only codes, sizes, counts and tool names.

The worker contract (SPEC section 4): 0 is success, ``REJECTED_INPUT`` (65, sysexits EX_DATAERR)
means the upload itself is bad and must never be retried (every job definition's
``retryStrategy.evaluateOnExit`` EXITs on it); any other non-zero code is retryable.
"""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    USAGE = 2
    REJECTED_INPUT = 65  # EX_DATAERR: bad upload; never retried
    TOOL_MISSING = 69  # EX_UNAVAILABLE: tesseract or another tool is not installed
    INTERNAL = 70  # EX_SOFTWARE: a bug; retried, then FAILED
    TRANSIENT = 75  # EX_TEMPFAIL: store/database/service trouble; retried
    CONFIG = 78  # EX_CONFIG: bad settings


class MedintakeError(Exception):
    """Base of all our errors. ``exit_code`` decides what the job runner does with it."""

    exit_code: ExitCode = ExitCode.INTERNAL
    fix = ""

    def __init__(self, message: str = "", *, fix: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)
        if fix is not None:
            self.fix = fix

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(MedintakeError):
    """The settings are inconsistent or incomplete."""

    exit_code = ExitCode.CONFIG
    fix = "Check the MEDINTAKE_* environment variables and command-line options."


class ToolMissing(MedintakeError):
    """An external program the pipeline needs is not installed."""

    exit_code = ExitCode.TOOL_MISSING
    fix = "Install it (the README's set-up command does) or use the worker image."


class ToolFailed(MedintakeError):
    """An external program failed or timed out; retryable."""

    exit_code = ExitCode.TRANSIENT


class TransientError(MedintakeError):
    """Infrastructure trouble (store, database, remote service): retried by the job definition."""

    exit_code = ExitCode.TRANSIENT


class DocumentNotFound(MedintakeError):
    """No such document is registered."""

    exit_code = ExitCode.USAGE


class RejectedInput(MedintakeError):
    """The upload itself cannot be processed. Never retried; the document ends REJECTED.

    ``reason_code`` is machine-readable and stable; the message is a human sentence without PHI.
    """

    exit_code = ExitCode.REJECTED_INPUT
    reason_code = "rejected_input"
    fix = "Upload a readable PDF or image."


class EmptyFile(RejectedInput):
    """The upload is empty (0 bytes)."""

    reason_code = "empty_file"
    fix = "Upload the file again; the upload that arrived has no content."


class UnsupportedType(RejectedInput):
    """The upload is none of the formats the pipeline reads."""

    reason_code = "unsupported_type"
    fix = ("Upload a PDF; a JPEG, PNG, TIFF, WebP, GIF, BMP, HEIC, AVIF or JPEG 2000 image; "
           "a DICOM file; or a DOCX, ODT, RTF or plain-text letter.")


class CorruptFile(RejectedInput):
    """The upload claims a known format but cannot be decoded."""

    reason_code = "corrupt_file"
    fix = "Upload the file again or export it anew from the application that made it."


class EncryptedPdf(RejectedInput):
    """The PDF is password-protected."""

    reason_code = "encrypted_pdf"
    fix = "Upload a copy of the PDF without a password."


class TooLarge(RejectedInput):
    """The upload exceeds a configured limit (bytes or pages)."""

    reason_code = "too_large"
    fix = "Split the document or reduce its resolution, then upload again."


class DecompressionBomb(RejectedInput):
    """The image declares more pixels than the configured limit allows."""

    reason_code = "decompression_bomb"
    fix = "Upload a smaller image; this one expands to more pixels than allowed."


class UnsafeKey(RejectedInput):
    """The object key cannot be used safely (traversal, absolute path, NUL byte or overlong)."""

    reason_code = "unsafe_key"
    fix = "Upload under a plain key: no '..' segments, no leading '/', no NUL, at most 1024 bytes."


class DicomWithoutImage(RejectedInput):
    """The DICOM file holds no image to show or read (a structured report, a non-PDF document)."""

    reason_code = "dicom_without_image"
    fix = "Send the image series itself, or the report as a PDF or an encapsulated-PDF DICOM object."


class DicomDirectory(RejectedInput):
    """The upload is a DICOMDIR: the index of a DICOM disc, without any image of its own."""

    reason_code = "dicomdir"
    fix = "Upload the image files the DICOMDIR lists (the files in the disc's DICOM folder), not the index."


class UnsupportedDicomCompression(RejectedInput):
    """The DICOM pixel data uses a compression (transfer syntax) no installed decoder reads."""

    reason_code = "unsupported_dicom_compression"
    fix = "Export the images again uncompressed or as JPEG, JPEG 2000, JPEG-LS or RLE from the viewer or PACS."


REJECTION_CLASSES: dict[str, type[RejectedInput]] = {
    cls.reason_code: cls
    for cls in (RejectedInput, EmptyFile, UnsupportedType, CorruptFile, EncryptedPdf, TooLarge, DecompressionBomb,
                UnsafeKey, DicomWithoutImage, DicomDirectory, UnsupportedDicomCompression)
}
