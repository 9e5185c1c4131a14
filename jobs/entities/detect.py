"""The entities stage: medical entities of a document's text in Comprehend Medical's shapes.

``analyse`` is what the entities job calls; ``detect_entities`` is the DetectEntitiesV2 part alone
(the CLI's ``medintake entities`` and the tests use it). The backend comes from
``settings.entities_backend``:

- "local" (the embedded default, no network): the local extractor (jobs.entities.local), then the
  rule modules for test values, PHI and time expressions (jobs.entities.enrich), then ICD-10-CM
  codes for its conditions (jobs.entities.icd10, setting ``local_icd10cm``);
- "comprehendmedical": Amazon Comprehend Medical, every operation of ``comprehend_operations``
  (jobs.entities.comprehend), with request splitting, retries and billed units.

Both give DetectEntitiesV2's response shape with offsets into the given text, so entities.json and
the database rows do not depend on the backend; the other operations' responses keep their own
shapes (InferICD10CM, InferRxNorm, DetectPHI). Backends are imported lazily: the dispatcher must
not pay for boto3 or the code set.

No PHI leaves this module in logs or errors: only counts, sizes and codes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# The keys of a DetectEntitiesV2 response, entity and attribute (botocore's output shape members
# that we fill; PaginationToken is never returned by the synchronous call we make).
RESPONSE_KEYS = ("Entities", "UnmappedAttributes", "ModelVersion")
ENTITY_KEYS = ("Id", "BeginOffset", "EndOffset", "Score", "Text", "Category", "Type", "Traits", "Attributes")
ATTRIBUTE_KEYS = ("Type", "Score", "RelationshipScore", "RelationshipType", "Id", "BeginOffset", "EndOffset",
                  "Text", "Category", "Traits")

# Output file (beside entities.json) of each operation other than DetectEntitiesV2.
FILES = {"InferICD10CM": "icd10cm.json", "InferRxNorm": "rxnorm.json", "DetectPHI": "phi.json"}


@dataclass
class Analysis:
    """What the stage found: entities.json's response, the other operations' responses, the bill."""

    entities: dict
    others: dict[str, dict] = field(default_factory=dict)  # operation -> response (see FILES)
    billing: dict[str, Any] | None = None  # comprehendmedical only
    low_confidence: int = 0  # entities marked LOW_CONFIDENCE from OCR word confidences


def analyse(text: str, settings: Settings, low_confidence: Any = None) -> Analysis:
    """Every configured operation over ``text``; ``low_confidence`` (ocr_confidence.LowConfidence) marks traits."""
    backend = settings.entities_backend
    started = time.perf_counter()
    marked = 0
    if backend == "local":
        from jobs.entities.enrich import enrich
        from jobs.entities.local import extract

        entities = enrich(text, extract(text))
        entities.setdefault("UnmappedAttributes", [])
        if low_confidence is not None:
            marked = low_confidence.mark(entities)
        others: dict[str, dict] = {}
        if settings.local_icd10cm == "on":
            from jobs.entities.icd10 import infer_icd10cm

            # traits (LOW_CONFIDENCE too) carried over; the code index is read from the cache folder
            others["InferICD10CM"] = infer_icd10cm(entities, cache_dir=settings.effective_cache_dir)
        result = Analysis(entities, others, None, marked)
    elif backend == "comprehendmedical":
        from jobs.entities.comprehend import analyse as comprehend_analyse

        responses, billing = comprehend_analyse(text, settings)
        entities = responses.pop("DetectEntitiesV2")
        entities.setdefault("UnmappedAttributes", [])
        if low_confidence is not None:
            marked = low_confidence.mark(entities)
            for op in ("InferICD10CM", "DetectPHI"):  # InferRxNorm's traits have no LOW_CONFIDENCE
                if op in responses:
                    low_confidence.mark(responses[op])
        result = Analysis(entities, responses, billing, marked)
    else:
        raise ConfigError("entities_backend must be one of local, comprehendmedical")
    log.info("entities: backend=%s chars=%d entities=%d low_confidence=%d operations=%d seconds=%.3f", backend,
             len(text), len(result.entities["Entities"]), marked, 1 + len(result.others),
             time.perf_counter() - started)
    return result


#: Fabricated text touching every engine of the local backend (lexicons, model, rules, codes).
_WARM_TEXT = "Patient on metformin 500 mg twice daily for type 2 diabetes; denies chest pain. Hb 12.1 g/dL."


def warm(settings: Settings) -> tuple[str, ...]:
    """Load what ``analyse`` loads on first use for these settings, so that a process forked after
    this (jobs/entities/preload.py, run by the local warm server) starts with it in memory.

    Runs ``analyse`` once on a fabricated sentence rather than listing the loaders, so every lazy
    load it has (now or later) is covered. Returns the engines loaded; nothing for a remote backend.
    """
    if settings.entities_backend != "local":
        return ()
    analyse(_WARM_TEXT, settings)
    return ("lexicon", "model", "rules") + (("icd10cm",) if settings.local_icd10cm == "on" else ())


def detect_entities(text: str, settings: Settings) -> dict:
    """Entities of ``text`` as a DetectEntitiesV2 response dict (Entities, UnmappedAttributes, ModelVersion)."""
    if settings.entities_backend == "comprehendmedical":
        from jobs.entities.comprehend import detect_entities_v2

        result = detect_entities_v2(text, settings)
        result.setdefault("UnmappedAttributes", [])
        return result
    return analyse(text, settings.replace(local_icd10cm="off")).entities
