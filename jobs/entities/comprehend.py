"""Amazon Comprehend Medical backend: DetectEntitiesV2 over a whole document.

Why splitting: one DetectEntitiesV2 request takes at most 20,000 characters (botocore's model:
``BoundedLengthString`` max 20000), and the developer guide states the same limit as "20 KB" of
UTF-8. We honour both: a part has at most 20,000 characters AND at most 20,000 UTF-8 bytes, cut at
the last page break, blank line, line break, sentence end or whitespace inside the limit, so an
entity is rarely cut. Offsets of every entity and attribute are shifted back into the whole text
and Ids renumbered so they stay unique in the merged response. If the service still answers
TextSizeLimitExceededException, that part is halved and sent again.

Why our own retries: botocore's retries are switched off for this client so that the number of
attempts and the total wait are bounded here (exponential backoff with jitter), once, not twice.
Errors never carry the text or the service's message (a ValidationException can echo input):
only the error code, HTTP status and part numbers.
"""
from __future__ import annotations

import logging
import random
import re
import time
from functools import lru_cache
from typing import Any, Callable

from pipeline.errors import ConfigError, MedintakeError, TransientError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

MAX_CHARS = 20_000
MAX_BYTES = 20_000
MIN_SPLIT_CHARS = 500  # below this, a part refused as too large is a real error, not a cutting problem

RETRYABLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "ServiceUnavailableException", "ServiceUnavailable", "InternalServerException", "InternalFailure",
    "InternalServerError", "RequestTimeout", "RequestTimeoutException", "ExpiredTokenException",
    "RequestExpired", "SlowDown",
})
CONFIG_CODES = frozenset({
    "AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException",
    "InvalidClientTokenId", "SubscriptionRequiredException", "OptInRequired", "AuthFailure",
    "MissingAuthenticationTokenException", "MissingAuthenticationToken", "NotAuthorized",
    "UnauthorizedOperation", "SignatureDoesNotMatch",
})
_SENTENCE_END = re.compile(r"[.!?;][\"')\]]*\s")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _PartTooLarge(Exception):
    """The service refused one part as too large; the caller halves it."""


def split_text(text: str, max_chars: int = MAX_CHARS, max_bytes: int = MAX_BYTES) -> list[tuple[int, str]]:
    """Cut ``text`` into (offset, part) pieces within both limits; whitespace-only parts are dropped."""
    parts: list[tuple[int, str]] = []
    pos, n = 0, len(text)
    while pos < n:
        end = _cut(text, pos, max_chars, max_bytes)
        if text[pos:end].strip():
            parts.append((pos, text[pos:end]))
        pos = end
    return parts


def _cut(text: str, pos: int, max_chars: int, max_bytes: int) -> int:
    """End of the part starting at ``pos``: the best boundary inside the character and byte limits."""
    hard = min(len(text), pos + max_chars)
    encoded = text[pos:hard].encode("utf-8", "surrogatepass")
    if len(encoded) > max_bytes:
        hard = pos + len(encoded[:max_bytes].decode("utf-8", "ignore"))
    if hard >= len(text):
        return len(text)
    floor = pos + (hard - pos) // 2  # prefer a strong boundary only if it keeps the part at least half full
    for sep in ("\f", "\n\n", "\n"):
        i = text.rfind(sep, floor, hard)
        if i >= 0:
            return i + len(sep)
    last = None
    for m in _SENTENCE_END.finditer(text, floor, hard):
        last = m
    if last is not None:
        return last.end()
    for i in range(hard - 1, pos, -1):
        if text[i].isspace():
            return i + 1
    return hard  # one "word" longer than the limit: cut it


class ComprehendMedical:
    """DetectEntitiesV2 over a text of any length, with bounded retries; the client is injectable."""

    def __init__(self, client: Any, *, max_chars: int = MAX_CHARS, max_bytes: int = MAX_BYTES,
                 max_attempts: int = 6, base_delay: float = 0.5, max_delay: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> None:
        self.client = client
        self.max_chars = max_chars
        self.max_bytes = max_bytes
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.calls = 0
        self.retries = 0

    def detect(self, text: str) -> dict:
        """The merged DetectEntitiesV2 response for the whole ``text``."""
        entities: list[dict] = []
        unmapped: list[dict] = []
        model_version = ""
        next_id = 0
        queue = split_text(text, self.max_chars, self.max_bytes)
        done = 0
        while queue:
            offset, part = queue.pop(0)
            try:
                resp = self._call(part, done + 1, done + 1 + len(queue))
            except _PartTooLarge:
                if len(part) < MIN_SPLIT_CHARS:
                    raise TransientError("Comprehend Medical refused a small part as too large "
                                         f"({len(part)} characters)") from None
                half = split_text(part, max(1, len(part) // 2), max(1, len(part.encode('utf-8', 'surrogatepass')) // 2))
                queue[:0] = [(offset + o, p) for o, p in half]
                continue
            done += 1
            model_version = model_version or resp.get("ModelVersion", "")
            ids: dict[int, int] = {}

            def renumber(old: int) -> int:
                nonlocal next_id
                if old not in ids:
                    ids[old] = next_id
                    next_id += 1
                return ids[old]

            for ent in resp.get("Entities", []):
                entities.append(_shift(ent, offset, renumber))
            for ua in resp.get("UnmappedAttributes", []):
                ua = dict(ua)
                if "Attribute" in ua:
                    ua["Attribute"] = _shift(ua["Attribute"], offset, renumber)
                unmapped.append(ua)
        log.info("comprehendmedical: parts=%d calls=%d retries=%d entities=%d", done, self.calls, self.retries,
                 len(entities))
        return {"Entities": entities, "UnmappedAttributes": unmapped, "ModelVersion": model_version}

    def _call(self, part: str, index: int, total: int) -> dict:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            HTTPClientError,
            NoCredentialsError,
            NoRegionError,
            ParamValidationError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        part = _SURROGATE.sub("\ufffd", part)  # same length, so offsets hold; the service needs valid UTF-8
        attempt = 0
        while True:
            attempt += 1
            self.calls += 1
            try:
                return self.client.detect_entities_v2(Text=part)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                if code == "TextSizeLimitExceededException":
                    raise _PartTooLarge() from None
                if code in CONFIG_CODES or status in (401, 403):
                    raise ConfigError(f"Comprehend Medical refused the request ({code}, HTTP {status})",
                                      fix="Check the AWS credentials, the IAM policy "
                                          "(comprehendmedical:DetectEntitiesV2) and the region.") from None
                if not (code in RETRYABLE_CODES or status >= 500 or status == 429):
                    raise TransientError(f"Comprehend Medical DetectEntitiesV2 failed ({code or 'unknown'}, "
                                         f"HTTP {status}) on part {index} of {total}") from None
                reason = code or f"HTTP {status}"
            except (NoCredentialsError, NoRegionError) as exc:
                raise ConfigError(f"Comprehend Medical is not configured ({type(exc).__name__})") from None
            except ParamValidationError:
                raise MedintakeError(f"DetectEntitiesV2 request for part {index} of {total} is invalid "
                                     f"({len(part)} characters)") from None
            except (BotoConnectionError, HTTPClientError) as exc:
                reason = type(exc).__name__
            except BotoCoreError as exc:
                raise TransientError(f"Comprehend Medical call failed ({type(exc).__name__})") from None
            if attempt >= self.max_attempts:
                raise TransientError(f"Comprehend Medical still failing after {attempt} attempts ({reason}) "
                                     f"on part {index} of {total}")
            self.retries += 1
            cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
            delay = cap / 2 + self.rng.uniform(0, cap / 2)  # "equal jitter": spread out, never zero
            log.warning("comprehendmedical: %s, retry %d in %.2fs", reason, attempt, delay)
            self.sleep(delay)


def _shift(item: dict, offset: int, renumber: Callable[[int], int]) -> dict:
    """A copy of an entity or attribute with offsets moved by ``offset`` and Ids renumbered."""
    out = dict(item)
    for key in ("BeginOffset", "EndOffset"):
        if key in out:
            out[key] = out[key] + offset
    if "Id" in out:
        out["Id"] = renumber(out["Id"])
    if "Attributes" in out:
        out["Attributes"] = [_shift(a, offset, renumber) for a in out["Attributes"]]
    return out


@lru_cache(maxsize=4)
def make_client(region: str) -> Any:
    """A comprehendmedical client with botocore's own retries off (we retry, see the module doc)."""
    import boto3
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    known = botocore.session.get_session().get_available_regions("comprehendmedical")
    if region and known and region not in known:
        raise ConfigError(f"Comprehend Medical is not offered in region {region}",
                          fix="Use MEDINTAKE_ENTITIES_BACKEND=local or a region that offers the service.")
    for name in ("botocore.endpoint", "botocore.parsers"):  # their DEBUG records hold request/response bodies
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).getEffectiveLevel()))
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    try:
        return boto3.client("comprehendmedical", region_name=region or None, config=config)
    except NoRegionError:
        raise ConfigError("Comprehend Medical needs a region", fix="Set MEDINTAKE_AWS_REGION.") from None


def detect_entities_v2(text: str, settings: Settings, client: Any = None) -> dict:
    """Whole-text DetectEntitiesV2 for the entities stage (``client`` injectable for tests)."""
    if not text.strip():
        return {"Entities": [], "UnmappedAttributes": [], "ModelVersion": ""}
    return ComprehendMedical(client or make_client(settings.aws_region)).detect(text)
