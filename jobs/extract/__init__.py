"""The ``extract`` job (job_definitions/extract.json): searchable text from an upload.

``job`` (stored outputs and page rows), ``text`` (the stage: pages one by one into text.txt,
pages.json and searchable.pdf), ``pdf`` (text layer, page rendering, searchable-PDF assembly),
``ocr`` (one page image: ``preprocess``, ``tesseract``, ``orientation``), ``results``.
"""
