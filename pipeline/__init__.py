"""medintake: turns medical uploads into text, entities and renditions.

The library is importable piece by piece: the dispatcher path (settings, events, store, db,
dispatcher, tracker) never imports OpenCV, Tesseract, Pillow or a PDF engine; those live in the
stage modules (detect, extract, ocr, pdf, entities, renditions) that only workers import.
"""
from __future__ import annotations

__version__ = "0.1.0"
