"""What a compute backend is to the rest of the pipeline: something that takes job submissions.

Backends live in the top-level ``compute`` package (local worker processes; AWS Batch). The
dispatcher builds one frozen ``JobSubmission`` per job of the document's graph and hands it over;
it never knows which backend runs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

from pipeline.jobdefs import JobDefinition


@dataclass(frozen=True)
class JobSubmission:
    name: str  # searchable: medintake-<kind>-<document_id>-a<attempt>, or medintake-batch-<id>
    kind: str
    definition: JobDefinition
    parameters: Mapping[str, str]
    depends_on: tuple[str, ...] = ()
    timeout_seconds: int | None = None  # overrides the definition's attempt timeout
    # An array job of this many children (2-10,000; AWS_BATCH_JOB_ARRAY_INDEX 0..n-1 in each,
    # child ids <parent>:<index>); None for a plain job. An array of one is a plain job.
    array_size: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class ComputeEnvironment(Protocol):
    def submit(self, submission: JobSubmission) -> str:
        """Queue the job; return its job id."""

    def cancel(self, job_id: str, reason: str) -> None:
        """Stop the job whatever its state (Batch's TerminateJob); it ends FAILED with ``reason``."""
