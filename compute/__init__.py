"""Compute environments that run the document's jobs: local worker processes or AWS Batch."""
from __future__ import annotations

from typing import Callable

from pipeline.settings import Settings


def open_compute(settings: Settings, listeners: list[Callable[[dict], None]] | None = None):
    """The compute environment the settings name. ``listeners`` get job state change events."""
    if settings.compute_backend == "batch":
        from compute.batch import BatchComputeEnvironment

        return BatchComputeEnvironment(settings)
    from compute.local import LocalComputeEnvironment

    return LocalComputeEnvironment(settings, listeners=listeners or [])
