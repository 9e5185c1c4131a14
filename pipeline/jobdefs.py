"""Job definitions (job_definitions/*.json) and the document's job graph.

The JSON files are AWS Batch ``RegisterJobDefinition`` requests and the single source both compute
backends read: the Batch backend registers them (named by a hash of their content, registered only
when missing), the local backend runs their command with the same ``Ref::`` parameters, attempt
timeout and ``retryStrategy.evaluateOnExit`` rules. Light module (json, hashlib): dispatcher path.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import ConfigError

# The document's job graph: kind -> kinds it depends on. extract and convert read the original in
# parallel; entities reads extract's text.
GRAPH: dict[str, tuple[str, ...]] = {"extract": (), "convert": (), "entities": ("extract",)}


@dataclass(frozen=True)
class JobDefinition:
    kind: str
    name: str
    command: tuple[str, ...]
    vcpus: float
    memory_mib: int
    timeout_seconds: int | None
    attempts: int
    evaluate_on_exit: tuple[Mapping[str, str], ...]
    raw: Mapping[str, Any]

    @property
    def content_hash(self) -> str:
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(canonical).hexdigest()[:12]

    @property
    def registered_name(self) -> str:
        """Name under which Batch knows this exact content (Metaflow-style)."""
        return f"{self.name}-{self.content_hash}"

    def resolve_command(self, parameters: Mapping[str, str]) -> list[str]:
        """Substitute ``Ref::name`` tokens as Batch does (defaults from the definition)."""
        values = {**self.raw.get("parameters", {}), **parameters}
        out = []
        for token in self.command:
            if token.startswith("Ref::"):
                name = token[5:]
                if name not in values:
                    raise ConfigError(f"job definition {self.name} references an unknown parameter")
                token = str(values[name])
            out.append(token)
        return out


def _parse(path: Path) -> JobDefinition:
    try:
        raw = json.loads(path.read_text())
        props = raw["containerProperties"]
        resources = {r["type"]: r["value"] for r in props.get("resourceRequirements", [])}
        strategy = raw.get("retryStrategy") or {}
        return JobDefinition(
            kind=path.stem,
            name=raw["jobDefinitionName"],
            command=tuple(props["command"]),
            vcpus=float(resources.get("VCPU", 1)),
            memory_mib=int(resources.get("MEMORY", 2048)),
            timeout_seconds=(raw.get("timeout") or {}).get("attemptDurationSeconds"),
            attempts=int(strategy.get("attempts", 1)),
            evaluate_on_exit=tuple(strategy.get("evaluateOnExit", [])),
            raw=raw,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"job definition {path.name} is invalid ({type(exc).__name__})") from None


@lru_cache(maxsize=8)
def _load_dir(directory: str, mtimes: tuple[float, ...]) -> dict[str, JobDefinition]:
    defs = {p.stem: _parse(p) for p in sorted(Path(directory).glob("*.json"))}
    missing = set(GRAPH) - set(defs)
    if missing:
        raise ConfigError(f"job definitions missing for: {', '.join(sorted(missing))}")
    return defs


def load_job_definitions(directory: Path) -> dict[str, JobDefinition]:
    files = sorted(Path(directory).glob("*.json"))
    return _load_dir(str(directory), tuple(p.stat().st_mtime for p in files))


def _glob_match(pattern: str, value: str) -> bool:
    """Batch's glob: exact, or a prefix when the pattern ends with ``*``; case-sensitive."""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def evaluate_on_exit(
    rules: tuple[Mapping[str, str], ...],
    exit_code: int | None,
    reason: str | None,
    status_reason: str | None,
) -> str:
    """RETRY or EXIT for a failed attempt, as AWS Batch decides it.

    Every condition an entry names must match; the first matching entry wins; when none matches
    the job is retried. A missing exit code (the container never ran) matches no ``onExitCode``
    pattern; a missing reason matches only ``*``.
    """
    for rule in rules:
        checks = []
        if "onExitCode" in rule:
            checks.append(exit_code is not None and _glob_match(rule["onExitCode"], str(exit_code)))
        if "onReason" in rule:
            checks.append(_glob_match(rule["onReason"], reason or ""))
        if "onStatusReason" in rule:
            checks.append(_glob_match(rule["onStatusReason"], status_reason or ""))
        if all(checks):
            return str(rule["action"]).upper()
    return "RETRY"
