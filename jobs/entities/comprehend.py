"""Amazon Comprehend Medical backend: DetectEntitiesV2, DetectPHI, InferICD10CM, InferRxNorm over a document.

Why splitting: one request takes at most 20,000 characters for DetectEntitiesV2 and DetectPHI and
10,000 for InferICD10CM and InferRxNorm (botocore's model: ``BoundedLengthString``), and the
developer guide states the limits in UTF-8 bytes ("20 KB"). We honour both: a part has at most
N characters AND at most N UTF-8 bytes, cut at the last page break, blank line, line break,
sentence end or whitespace inside the limit, so an entity is rarely cut. Offsets of every entity
and attribute are shifted back into the whole text (Python ``str`` indices, which is what the
service returns: code points) and Ids renumbered so they stay unique in the merged response. If
the service still answers TextSizeLimitExceededException, that part is halved and sent again.

Why our own retries: botocore's retries are switched off for this client so that the number of
attempts and the total wait are bounded here (exponential backoff with "equal jitter"), once, not
twice. Parts go out through a pool of ``comprehend_concurrency`` threads, so one document never has
more requests in flight than that, whatever the operations; when one request is throttled, the
other threads start no new request until its back-off has passed (retries keep their own
back-off), so a throttled account is not hit by the rest of the pool meanwhile.
Errors never carry the text or the service's message (a ValidationException can echo input):
only the error code, HTTP status and part numbers.

Billing: the service bills every request in units of 100 characters, at least one unit per
request (https://aws.amazon.com/comprehend/medical/pricing/). ``usage`` counts requests, characters
and units per operation for the requests that succeeded, and the estimated cost at the list prices
in PRICE_PER_UNIT_USD; the job puts it in the manifest.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import random
import re
import threading
import time
from functools import lru_cache
from typing import Any, Callable, Iterator

from pipeline.errors import ConfigError, MedintakeError, TransientError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

MAX_CHARS = 20_000
MAX_BYTES = 20_000
UNIT_CHARS = 100  # one billed unit

# operation -> (boto3 method, limit in characters and in UTF-8 bytes per request)
OPERATIONS: dict[str, tuple[str, int]] = {
    "DetectEntitiesV2": ("detect_entities_v2", 20_000),
    "DetectPHI": ("detect_phi", 20_000),
    "InferICD10CM": ("infer_icd10_cm", 10_000),
    "InferRxNorm": ("infer_rx_norm", 10_000),
}
# USD per 100-character unit, first volume tier, US East (N. Virginia), from
# https://aws.amazon.com/comprehend/medical/pricing/ (NERe = DetectEntitiesV2, PHId = DetectPHI,
# ICD-10-CM and RxNorm ontology linking). Larger volumes are cheaper and other regions may differ:
# the manifest's figure is an estimate, not an invoice.
PRICE_PER_UNIT_USD: dict[str, float] = {
    "DetectEntitiesV2": 0.01,
    "DetectPHI": 0.0014,
    "InferICD10CM": 0.0058,
    "InferRxNorm": 0.0058,
}
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


def billed_units(part: str) -> int:
    """Units billed for one request: 100-character units, rounded up, at least one."""
    return max(1, math.ceil(len(part) / UNIT_CHARS))


class ComprehendMedical:
    """Comprehend Medical operations over a text of any length, with bounded retries and concurrency.

    The client is injectable (tests pass a Stubber-wrapped client or a fake). ``usage`` accumulates
    per operation over every call of this object.
    """

    def __init__(self, client: Any, *, max_chars: int | None = None, max_bytes: int | None = None,
                 max_attempts: int = 6, base_delay: float = 0.5, max_delay: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 concurrency: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.max_chars = max_chars
        self.max_bytes = max_bytes
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.concurrency = max(1, concurrency)
        self.calls = 0
        self.retries = 0
        self.usage: dict[str, dict[str, int]] = {}
        self.clock = clock
        self.gate_waits = 0
        self._gate = 0.0  # clock time before which no first attempt starts (set by a throttled request)
        self._lock = threading.Lock()

    def detect(self, text: str) -> dict:
        """The merged DetectEntitiesV2 response for the whole ``text``."""
        return self.run(text, "DetectEntitiesV2")

    def run(self, text: str, operation: str = "DetectEntitiesV2") -> dict:
        """The merged response of ``operation`` over the whole ``text`` (its own response shape)."""
        method, limit = OPERATIONS[operation]
        parts = split_text(text, self.max_chars or limit, self.max_bytes or limit)
        total = len(parts)
        if self.concurrency == 1 or total <= 1:
            answers = [self._part(method, operation, o, p, k + 1, total) for k, (o, p) in enumerate(parts)]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(self.concurrency, total)) as pool:
                futures = [pool.submit(self._part, method, operation, o, p, k + 1, total)
                           for k, (o, p) in enumerate(parts)]
                answers = [f.result() for f in futures]
        merged = self._merge([a for answer in answers for a in answer], operation)
        log.info("comprehendmedical: operation=%s parts=%d calls=%d retries=%d entities=%d", operation, total,
                 self.calls, self.retries, len(merged["Entities"]))
        return merged

    def _part(self, method: str, operation: str, offset: int, part: str, index: int,
              total: int) -> list[tuple[int, dict]]:
        """(offset, response) of one part; a part refused as too large is halved, in order."""
        try:
            resp = self._call(part, index, total, method)
        except _PartTooLarge:
            if len(part) < MIN_SPLIT_CHARS:
                raise TransientError("Comprehend Medical refused a small part as too large "
                                     f"({len(part)} characters)") from None
            halves = split_text(part, max(1, len(part) // 2), max(1, len(part.encode("utf-8", "surrogatepass")) // 2))
            return [r for o, p in halves for r in self._part(method, operation, offset + o, p, index, total)]
        with self._lock:
            u = self.usage.setdefault(operation, {"requests": 0, "characters": 0, "units": 0})
            u["requests"] += 1
            u["characters"] += len(part)
            u["units"] += billed_units(part)
        return [(offset, resp)]

    @staticmethod
    def _merge(answers: list[tuple[int, dict]], operation: str) -> dict:
        entities: list[dict] = []
        unmapped: list[dict] = []
        model_version = ""
        counter = itertools.count()
        for offset, resp in answers:
            model_version = model_version or resp.get("ModelVersion", "")
            ids: dict[int, int] = {}  # this response's Ids -> merged Ids (an attribute may repeat an Id)
            renumber = functools.partial(_renumber, ids, counter)
            for ent in resp.get("Entities", []):
                entities.append(_shift(ent, offset, renumber))
            for ua in resp.get("UnmappedAttributes", []):
                ua = dict(ua)
                if "Attribute" in ua:
                    ua["Attribute"] = _shift(ua["Attribute"], offset, renumber)
                unmapped.append(ua)
        out: dict[str, Any] = {"Entities": entities, "ModelVersion": model_version}
        if operation == "DetectEntitiesV2":
            out["UnmappedAttributes"] = unmapped
        return out

    def billing(self) -> dict[str, Any]:
        """Usage per operation with its list price and estimated cost, and the total (for the manifest)."""
        out: dict[str, Any] = {}
        total = 0.0
        for op, u in sorted(self.usage.items()):
            cost = round(u["units"] * PRICE_PER_UNIT_USD[op], 6)
            total += cost
            out[op] = {**u, "price_per_unit_usd": PRICE_PER_UNIT_USD[op], "estimated_cost_usd": cost}
        return {"service": "comprehendmedical", "operations": out, "estimated_cost_usd": round(total, 6),
                "unit_characters": UNIT_CHARS, "price_source": "https://aws.amazon.com/comprehend/medical/pricing/"}

    def _call(self, part: str, index: int, total: int, method: str = "detect_entities_v2") -> dict:
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
            if attempt == 1:  # a throttled request holds back the others' new requests too
                with self._lock:
                    wait = self._gate - self.clock()
                    self.gate_waits += wait > 0
                if wait > 0:
                    self.sleep(wait)
            with self._lock:
                self.calls += 1
            try:
                return getattr(self.client, method)(Text=part)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                if code == "TextSizeLimitExceededException":
                    raise _PartTooLarge() from None
                if code in CONFIG_CODES or status in (401, 403):
                    raise ConfigError(f"Comprehend Medical refused the request ({code}, HTTP {status})",
                                      fix="Check the AWS credentials, the IAM policy (comprehendmedical:"
                                          "DetectEntitiesV2 and the other operations of comprehend_operations) "
                                          "and the region.") from None
                if not (code in RETRYABLE_CODES or status >= 500 or status == 429):
                    raise TransientError(f"Comprehend Medical {method} failed ({code or 'unknown'}, "
                                         f"HTTP {status}) on part {index} of {total}") from None
                reason = code or f"HTTP {status}"
            except (NoCredentialsError, NoRegionError) as exc:
                raise ConfigError(f"Comprehend Medical is not configured ({type(exc).__name__})") from None
            except ParamValidationError:
                raise MedintakeError(f"{method} request for part {index} of {total} is invalid "
                                     f"({len(part)} characters)") from None
            except (BotoConnectionError, HTTPClientError) as exc:
                reason = type(exc).__name__
            except BotoCoreError as exc:
                raise TransientError(f"Comprehend Medical call failed ({type(exc).__name__})") from None
            if attempt >= self.max_attempts:
                raise TransientError(f"Comprehend Medical still failing after {attempt} attempts ({reason}) "
                                     f"on part {index} of {total}")
            with self._lock:
                self.retries += 1
            cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
            with self._lock:
                delay = cap / 2 + self.rng.uniform(0, cap / 2)  # "equal jitter": spread out, never zero
                self._gate = max(self._gate, self.clock() + delay)
            log.warning("comprehendmedical: %s, retry %d in %.2fs", reason, attempt, delay)
            self.sleep(delay)


def _renumber(ids: dict[int, int], counter: Iterator[int], old: int) -> int:
    """The merged Id of ``old`` in one response: new Ids in order of first sight."""
    if old not in ids:
        ids[old] = next(counter)
    return ids[old]


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


def operations(settings: Settings) -> list[str]:
    """The operations named by ``settings.comprehend_operations``, DetectEntitiesV2 first."""
    names = [op.strip() for op in settings.comprehend_operations.split(",") if op.strip()]
    return ["DetectEntitiesV2"] + [op for op in dict.fromkeys(names) if op != "DetectEntitiesV2"]


def analyse(text: str, settings: Settings, client: Any = None) -> tuple[dict[str, dict], dict[str, Any]]:
    """Every configured operation over ``text``: ({operation: merged response}, billing)."""
    empty = {"Entities": [], "ModelVersion": ""}
    if not text.strip():
        return ({op: dict(empty, **({"UnmappedAttributes": []} if op == "DetectEntitiesV2" else {}))
                 for op in operations(settings)}, ComprehendMedical(None).billing())
    cm = ComprehendMedical(client or make_client(settings.aws_region), concurrency=settings.comprehend_concurrency)
    return {op: cm.run(text, op) for op in operations(settings)}, cm.billing()


def detect_entities_v2(text: str, settings: Settings, client: Any = None) -> dict:
    """Whole-text DetectEntitiesV2 for the entities stage (``client`` injectable for tests)."""
    if not text.strip():
        return {"Entities": [], "UnmappedAttributes": [], "ModelVersion": ""}
    return ComprehendMedical(client or make_client(settings.aws_region),
                             concurrency=settings.comprehend_concurrency).detect(text)
