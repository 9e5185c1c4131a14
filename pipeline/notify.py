"""Notices: one per document attempt, from an outbox row, to SNS or a JSON-lines file.

The payload carries ids, statuses, reason codes, output keys and counts only: no text, no entity
values, no object key or file name (a file name can carry a patient's name). The outbox row is
written in the same transaction that sets the final status; publishing happens after commit and is
retried from the outbox until it succeeds, so a crash between the two loses no notice.

Sending twice is the other half (docs/reliability.md, "double notice"): before each publish call
the row is moved to ``publishing`` and committed, with who and when. A definite failure (SNS
answered with an error, or no connection was ever made) puts it back to ``pending``. An unknown
outcome (the process died inside the call, a read timeout after the request went out) is never
re-sent blindly to e-mail or SMS subscribers: on a standard topic the notice becomes
``unconfirmed`` (a metric, an alarm, ``medintake notices list|resend|confirm``); on a FIFO topic
it is re-sent while SNS's 5-minute deduplication window still covers the first try. The notices
file can be looked at, so an unknown outcome there is settled by reading the file.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from pipeline import repository
from pipeline.errors import TransientError
from pipeline.settings import Settings

log = logging.getLogger("medintake.notify")


class Notifier(Protocol):
    """``publish`` raises PublishOutcomeUnknown when the message may have gone out, any other
    exception when it surely did not. Optional attributes: ``resend_window`` (seconds within which
    publishing the same notice again is harmless) and ``was_published(payload)`` (look and tell)."""

    def publish(self, payload: dict[str, Any]) -> None: ...


class PublishOutcomeUnknown(TransientError):
    """The publish request may have reached SNS: whether the notice went out is unknown."""


#: SNS FIFO topics drop a message whose deduplication id was accepted in the last 5 minutes; we
#: re-send only while the first try is at most 4 minutes old (a minute of margin for clock skew
#: between trackers and the time the first request spent in flight).
FIFO_RESEND_WINDOW = 240.0
#: A publish lease outlives the longest publish call: 3 tries x (2 s connect + 5 s read) plus
#: backoff is under 25 s, and the tracker Lambda is stopped at 60 s. Past the lease, the holder is
#: dead (or stopped) and its publish's outcome is unknown.
LEASE_SECONDS = 120.0
#: SNS client timeouts: Publish answers in tens of milliseconds; a short read timeout keeps a
#: stuck call well inside the tracker's 60 s.
SNS_CONNECT_TIMEOUT = 2.0
SNS_READ_TIMEOUT = 5.0
SNS_TRIES = 3


def attributes(payload: dict[str, Any]) -> dict[str, str]:
    """SNS message attributes for subscription filter policies."""
    attrs = {"event_type": payload["event_type"], "status": payload["status"]}
    if payload.get("reason_code"):
        attrs["reason_code"] = payload["reason_code"]
    return attrs


class FileNotifier:
    """Appends one JSON line per notice; a lock keeps concurrent writers' lines whole."""

    resend_window = 0.0

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def publish(self, payload: dict[str, Any]) -> None:
        line = json.dumps({**payload, "attributes": attributes(payload)}, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # owner-only, whatever the umask
        with open(fd, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(line)
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)

    def was_published(self, payload: dict[str, Any]) -> bool:
        """Whether a line with this notice id is in the file (read only after a crash)."""
        if not self.path.exists():
            return False
        needle = json.dumps(payload["notice_id"])
        with self.path.open(encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            try:
                for line in fh:
                    if needle in line and json.loads(line).get("notice_id") == payload["notice_id"]:
                        return True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def sns_client(settings: Settings):
    """An SNS client whose SDK never re-sends on its own (total_max_attempts 1).

    botocore's standard and legacy retry modes both retry a read timeout and a dropped connection,
    that is, re-send a Publish that SNS may already have accepted: on a standard topic that is a
    second e-mail. So the SDK sends once and ``SnsNotifier`` decides, per error, whether a retry is
    safe. ``AWS_ENDPOINT_URL_SNS`` / ``AWS_ENDPOINT_URL`` (moto's server in tests) are honoured by
    boto3 itself.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=SNS_CONNECT_TIMEOUT,
        read_timeout=SNS_READ_TIMEOUT,
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    return boto3.client("sns", region_name=settings.aws_region or None, config=config)


#: Error codes SNS returns when it refused the request before accepting the message.
_THROTTLING = {"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
               "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"}


class SnsNotifier:
    """Publishes to a standard or FIFO topic with bounded, outcome-aware retries.

    Retried here, up to SNS_TRIES with jittered exponential backoff: throttling, 5xx error
    responses (SNS answered: the message was not accepted) and failures to connect (nothing was
    sent). A read timeout or a connection dropped after sending is an unknown outcome: retried
    only on a FIFO topic (same deduplication id, seconds apart), else PublishOutcomeUnknown.
    """

    def __init__(self, settings: Settings, client=None, sleep=None) -> None:
        import time

        self.topic_arn = settings.sns_topic_arn
        self.fifo = self.topic_arn.endswith(".fifo")
        self.resend_window = FIFO_RESEND_WINDOW if self.fifo else 0.0
        self.client = client or sns_client(settings)
        self.sleep = sleep or time.sleep

    def publish(self, payload: dict[str, Any]) -> None:
        import random

        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ParamValidationError

        kwargs: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Message": json.dumps(payload, sort_keys=True),
            "MessageAttributes": {
                k: {"DataType": "String", "StringValue": v} for k, v in attributes(payload).items()
            },
        }
        if self.fifo:  # exactly-once delivery window on FIFO topics
            kwargs["MessageGroupId"] = payload["document_id"]
            kwargs["MessageDeduplicationId"] = payload["notice_id"].replace(":", "-")
        unknown_before = False
        for try_no in range(1, SNS_TRIES + 1):
            unknown = False
            try:
                self.client.publish(**kwargs)
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                retry = code in _THROTTLING or status >= 500
                error = f"SNS publish failed ({code or status})"
            except (ConnectionError, ParamValidationError) as exc:  # nothing reached SNS
                retry = isinstance(exc, ConnectionError)
                error = f"SNS publish failed ({type(exc).__name__})"
            except BotoCoreError as exc:  # read timeout, connection closed: it may have gone out
                if not self.fifo:
                    raise PublishOutcomeUnknown(f"SNS publish outcome unknown ({type(exc).__name__})") from None
                retry = unknown = True
                error = f"SNS publish outcome unknown ({type(exc).__name__})"
            if not retry or try_no == SNS_TRIES:
                # A FIFO retry that failed definitely does not settle an earlier unknown try.
                raise (PublishOutcomeUnknown if unknown or unknown_before else TransientError)(error) from None
            unknown_before = unknown_before or unknown
            log.info("SNS publish try %d failed (%s); retrying", try_no, error)
            self.sleep(random.uniform(0, 0.2 * 2**try_no))


def open_notifier(settings: Settings) -> Notifier:
    if settings.notifier == "sns":
        return SnsNotifier(settings)
    return FileNotifier(settings.effective_notices_path)


def publisher_id() -> str:
    """Who is publishing: host, process and a random token (a restarted pid is someone else)."""
    import os
    import socket
    import uuid

    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def flush_outbox(settings: Settings, notifier: Notifier, lease_seconds: float = LEASE_SECONDS) -> int:
    """Publish every pending notice once; returns how many went out.

    First settles publishes whose publisher died inside the call (lease expired). Then, per
    pending notice: record and commit "publishing", publish, record "sent". A definite failure is
    released and raised (the caller's event is redelivered and the notice goes out then); an
    unknown outcome is recorded (unconfirmed, or pending inside a FIFO dedup window) and the
    other notices still go out; it is raised at the end when a retry can send it.
    """
    window = float(getattr(notifier, "resend_window", 0.0))
    look = getattr(notifier, "was_published", None)
    me = publisher_id()
    if look is not None:
        _settle_by_looking(settings, look, lease_seconds)
    else:
        for notice_id in repository.expire_notice_leases(settings, lease_seconds, window):
            log.warning("notice %d: publish outcome unknown; unconfirmed, not re-sent (see medintake notices list)",
                        notice_id)
    sent = 0
    retry_later: PublishOutcomeUnknown | None = None
    for notice in repository.unsent_notices(settings):
        if not repository.claim_notice(settings, notice.id, lease_seconds, publisher=me, resend_window=window):
            continue  # another tracker is publishing it, or its dedup window has closed
        try:
            notifier.publish(notice.payload)
        except PublishOutcomeUnknown as exc:
            state = repository.notice_outcome_unknown(settings, notice.id, me, window, exc.message)
            log.warning("notice %d: %s; now %s", notice.id, exc.message, state)
            if state == "pending":
                retry_later = exc
            continue
        except Exception as exc:
            error = exc.message if isinstance(exc, TransientError) else type(exc).__name__
            repository.release_notice(settings, notice.id, me, error)
            raise
        repository.mark_sent(settings, notice.id, me)
        sent += 1
    if retry_later is not None:
        raise retry_later
    return sent


def _settle_by_looking(settings: Settings, look, lease_seconds: float) -> None:
    """A notifier that can look settles unknown outcomes: sent if the notice is there, else pending."""
    repository.expire_notice_leases(settings, lease_seconds, resend_window=1e9)
    for notice in repository.notices_with_unknown_outcome(settings):
        repository.settle_notice(settings, notice.id, bool(look(notice.payload)))
