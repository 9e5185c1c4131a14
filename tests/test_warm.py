"""The warm server (compute/warm.py): a job definition's preload list is loaded once, before the first job.

Why: the entities engines cost ~0.5 CPU s per worker process to load; the local warm server
imports the modules a job definition names in ``MEDINTAKE_WARM_PRELOAD`` once, and every attempt
forked from it must find them loaded (counted: one load in all), with the attempt's settings.
A preload that would make forking unsafe (a thread) or that breaks the server must not break
the jobs: they are then started as new interpreters.

Each scenario runs in a fresh interpreter, because the forkserver is one per process.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Started in a fresh interpreter: runs N attempts of the module ``probe_job`` through WarmProcess,
# one after the other, each with the env given, and prints their exit codes.
_DRIVER = r"""
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from compute.warm import WarmProcess, prestart
env, n, out = json.loads(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
forked = None
if env.get("PROBE_PRESTART"):  # as the local runtime does: the server forked from here, first
    import probe_parent  # something this process imported that the server must not import again
    if env.get("PROBE_THREAD"):
        import threading, time
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    forked = prestart("probe_job", env)
codes = []
for i in range(n):
    p = WarmProcess("probe_job", [str(i)], env, out / f"attempt-{i}.log", str(out))
    codes.append(p.wait())
print(json.dumps({"codes": codes, "pid": __import__("os").getpid(), "forked": forked}))
"""

# The attempt: records what it found loaded when it started, then (optionally) runs the module's work.
_JOB = r"""
import gc, json, os, sys, threading


def main():
    with open(f"/proc/{os.getppid()}/stat") as fh:
        server_parent = int(fh.read().rsplit(")", 1)[1].split()[1])
    record = {"pid": os.getpid(), "ppid": os.getppid(), "attempt": sys.argv[1],
              "preloaded": "probe_preload" in sys.modules, "frozen": gc.get_freeze_count(),
              "threads": threading.active_count(), "parent_module": "probe_parent" in sys.modules,
              "server_parent": server_parent, "sigint": str(__import__("signal").getsignal(2))}
    if os.environ.get("PROBE_ENTITIES"):
        from jobs.entities import icd10, local
        from jobs.entities.model import predict
        record["before"] = [local.default_lexicon.cache_info().misses, predict.tagger.cache_info().misses,
                            icd10.default_index.cache_info().misses]
        from jobs.entities.detect import analyse
        from pipeline.settings import Settings
        analyse("Aspirin 81 mg daily for coronary artery disease.", Settings.load())
        record["after"] = [local.default_lexicon.cache_info().misses, predict.tagger.cache_info().misses,
                           icd10.default_index.cache_info().misses]
    with open(os.environ["PROBE_LOG"], "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":  # the server's preload imports this module, as it does jobs.__main__
    main()
"""


def run_attempts(tmp_path: Path, preload_source: str | None, env: dict[str, str], n: int = 3,
                 answer_out: dict | None = None) -> list[dict]:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "probe_job.py").write_text(_JOB)
    (mods / "probe_parent.py").write_text("")
    if preload_source is not None:
        (mods / "probe_preload.py").write_text(textwrap.dedent(preload_source))
    log = tmp_path / "records.jsonl"
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MEDINTAKE_WARM")}
    full_env = {**base, "PROBE_LOG": str(log), "PYTHONPATH": f"{mods}:{REPO}", **env}
    out = subprocess.run([sys.executable, "-c", _DRIVER, str(REPO), str(mods), json.dumps(full_env), str(n),
                          str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["codes"] == [0] * n, out.stderr[-2000:]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for r in records:
        r["exec"] = r.get("ppid") == answer["pid"]  # started by the driver itself: a new interpreter
    if answer_out is not None:
        answer_out.update(answer)
    return records


COUNTING_PRELOAD = """
    import os
    with open(os.environ["PROBE_LOG"], "a") as fh:
        fh.write('{"load": "%s", "cache_dir": "%s"}\\n' % (os.getpid(), os.environ.get("MEDINTAKE_CACHE_DIR", "")))
"""


def test_preload_list_is_loaded_once_before_the_first_attempt(tmp_path: Path) -> None:
    records = run_attempts(tmp_path, COUNTING_PRELOAD, {"MEDINTAKE_WARM_PRELOAD": "probe_preload",
                                                       "MEDINTAKE_CACHE_DIR": str(tmp_path / "cache")})
    loads = [r for r in records if "load" in r]
    attempts = [r for r in records if "attempt" in r]
    assert len(loads) == 1  # one load for all attempts, before the first of them
    assert records.index(loads[0]) == 0
    assert loads[0]["cache_dir"] == str(tmp_path / "cache")  # the server had the attempt's settings
    assert [a["attempt"] for a in attempts] == ["0", "1", "2"]
    for a in attempts:
        assert a["preloaded"] and a["ppid"] == int(loads[0]["load"])  # forked from the server that loaded it
        assert not a["exec"]
        assert a["frozen"] > 0  # the preloaded objects are out of the workers' GC
        assert a["threads"] == 1


def test_without_a_list_nothing_extra_is_loaded(tmp_path: Path) -> None:
    records = run_attempts(tmp_path, COUNTING_PRELOAD, {}, n=2)
    assert not [r for r in records if "load" in r]
    assert all(not r["preloaded"] and not r["exec"] and r["frozen"] > 0 for r in records)


def test_entities_engines_are_loaded_by_the_server_not_by_the_jobs(tmp_path: Path) -> None:
    cache = Path.home() / ".cache" / "medintake"  # the machine's index cache (built once per machine)
    records = run_attempts(tmp_path, None, {"MEDINTAKE_WARM_PRELOAD": "jobs.entities.preload",
                                            "MEDINTAKE_CACHE_DIR": str(cache), "PROBE_ENTITIES": "1"}, n=2)
    for r in records:
        assert r["before"] == [1, 1, 1]  # lexicon, CRF model, ICD-10-CM index: loaded once, by the server
        assert r["after"] == [1, 1, 1]  # and the job's own analysis loaded nothing again


def test_server_with_a_thread_falls_back_to_new_interpreters(tmp_path: Path) -> None:
    threaded = """
        import threading, time
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    """
    records = run_attempts(tmp_path, threaded, {"MEDINTAKE_WARM_PRELOAD": "probe_preload"}, n=2)
    assert len(records) == 2
    assert all(not r["preloaded"] and r["exec"] for r in records)  # each a new interpreter: nothing inherited


def test_preload_that_raises_does_not_stop_the_jobs(tmp_path: Path) -> None:
    records = run_attempts(tmp_path, "raise RuntimeError('boom')\n", {"MEDINTAKE_WARM_PRELOAD": "probe_preload"}, n=2)
    assert [r["attempt"] for r in records] == ["0", "1"]
    assert all(r["exec"] for r in records)  # the server died in its preload: new interpreters instead


@pytest.mark.parametrize("env, expected", [
    ({}, ["PIL.Image", "pypdfium2", "probe_job", "compute.warm_freeze"]),
    ({"MEDINTAKE_WARM_PRELOAD": " a.b , c ,"}, ["PIL.Image", "pypdfium2", "probe_job", "a.b", "c", "compute.warm_freeze"]),
])
def test_preload_modules(env: dict[str, str], expected: list[str]) -> None:
    from compute.warm import preload_modules

    assert preload_modules("probe_job", env) == expected


def test_server_forked_from_the_command_keeps_its_imports_and_serves_every_attempt(tmp_path: Path) -> None:
    """compute/warm_fork.py: the server is a fork of the command (its imports come along: not
    imported again), loads the definition's list once, and its workers start as a new
    interpreter's would (environment of the attempt, default signal handlers)."""
    answer: dict = {}
    records = run_attempts(tmp_path, COUNTING_PRELOAD, {"MEDINTAKE_WARM_PRELOAD": "probe_preload",
                                                       "PROBE_PRESTART": "1"}, answer_out=answer)
    assert answer["forked"] is True
    loads = [r for r in records if "load" in r]
    attempts = [r for r in records if "attempt" in r]
    assert len(loads) == 1 and len(attempts) == 3
    for a in attempts:
        assert a["ppid"] == int(loads[0]["load"]) and not a["exec"]  # forked from the server ...
        assert a["server_parent"] == answer["pid"]  # ... which is a fork of the command itself
        assert a["parent_module"]  # what the command had imported is there, not imported again
        assert a["preloaded"] and a["frozen"] > 0 and a["threads"] == 1
        assert "default_int_handler" in a["sigint"]


def test_a_command_with_a_thread_starts_the_server_the_usual_way(tmp_path: Path) -> None:
    answer: dict = {}
    records = run_attempts(tmp_path, COUNTING_PRELOAD, {"MEDINTAKE_WARM_PRELOAD": "probe_preload",
                                                       "PROBE_PRESTART": "1", "PROBE_THREAD": "1"},
                           n=2, answer_out=answer)
    assert answer["forked"] is False  # never fork a process that has threads
    attempts = [r for r in records if "attempt" in r]
    assert len(attempts) == 2
    for a in attempts:
        assert a["preloaded"] and not a["exec"]  # still warm: the server was started by exec
        assert not a["parent_module"]  # a new interpreter: nothing of the command's


def test_a_forked_server_whose_preload_raises_leaves_the_jobs_to_new_interpreters(tmp_path: Path) -> None:
    answer: dict = {}
    records = run_attempts(tmp_path, "raise RuntimeError('boom')\n",
                           {"MEDINTAKE_WARM_PRELOAD": "probe_preload", "PROBE_PRESTART": "1"}, n=2,
                           answer_out=answer)
    assert [r["attempt"] for r in records] == ["0", "1"]
    assert all(r["exec"] for r in records)
