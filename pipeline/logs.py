"""Logging: one JSON object per line, ids and codes only (never text, names or keys)."""
from __future__ import annotations

import json
import logging
import os


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = os.environ.get("AWS_BATCH_JOB_ID")
        if job_id:
            out["job_id"] = job_id
        return json.dumps(out)


# Loggers whose DEBUG output carries request/response bodies or file contents (PHI): never below INFO.
_CHATTY = ("botocore.endpoint", "botocore.parsers", "botocore.hooks", "urllib3", "pdfminer", "PIL")


def configure_logging(level: str = "INFO") -> None:
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
