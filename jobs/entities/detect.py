"""The entities stage: medical entities of a document's text in Comprehend Medical's shape.

``detect_entities`` is what the job runner calls. It picks the backend from
``settings.entities_backend``: "local" (the embedded default: lexicons and rules, no network) or
"comprehendmedical" (Amazon Comprehend Medical DetectEntitiesV2, with request splitting). Both
return the same DetectEntitiesV2 response shape, with offsets into the given text, so entities.json
and the database rows do not depend on the backend. Backends are imported lazily: the dispatcher
must not pay for boto3 when it runs locally.

No PHI leaves this module in logs or errors: only counts, sizes and codes.
"""
from __future__ import annotations

import logging
import time

from pipeline.errors import ConfigError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# The keys of a DetectEntitiesV2 response, entity and attribute (botocore's output shape members
# that we fill; PaginationToken is never returned by the synchronous call we make).
RESPONSE_KEYS = ("Entities", "UnmappedAttributes", "ModelVersion")
ENTITY_KEYS = ("Id", "BeginOffset", "EndOffset", "Score", "Text", "Category", "Type", "Traits", "Attributes")
ATTRIBUTE_KEYS = ("Type", "Score", "RelationshipScore", "RelationshipType", "Id", "BeginOffset", "EndOffset",
                  "Text", "Category", "Traits")


def detect_entities(text: str, settings: Settings) -> dict:
    """Entities of ``text`` as a DetectEntitiesV2 response dict (Entities, UnmappedAttributes, ModelVersion)."""
    backend = settings.entities_backend
    started = time.perf_counter()
    if backend == "local":
        from jobs.entities.local import extract

        result = extract(text)
    elif backend == "comprehendmedical":
        from jobs.entities.comprehend import detect_entities_v2

        result = detect_entities_v2(text, settings)
    else:
        raise ConfigError("entities_backend must be one of local, comprehendmedical")
    result.setdefault("UnmappedAttributes", [])
    log.info("entities: backend=%s chars=%d entities=%d seconds=%.3f", backend, len(text),
             len(result["Entities"]), time.perf_counter() - started)
    return result
