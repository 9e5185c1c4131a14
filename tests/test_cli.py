"""The command line: db upgrade, the summary table, watch, reprocess, errors."""
from __future__ import annotations

import json
import shutil

from click.testing import CliRunner
from conftest import FILES

import cli


def invoke(*args):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def test_db_upgrade(tmp_path):
    result = invoke("--data-dir", str(tmp_path), "db", "upgrade")
    assert result.exit_code == 0 and "revision 0001" in result.output
    assert (tmp_path / "medintake.db").is_file()


def test_process_prints_a_summary_table_and_exits_zero(tmp_path):
    result = invoke("--data-dir", str(tmp_path / "d"), "process", str(FILES / "digital_referral.pdf"))
    assert result.exit_code == 0, result.output
    assert "COMPLETED" in result.output and "1 of 1 completed" in result.output


def test_process_folder_in_name_order_and_reprocess(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copyfile(FILES / "empty.pdf", inbox / "b.pdf")
    shutil.copyfile(FILES / "digital_referral.pdf", inbox / "a.pdf")
    data = str(tmp_path / "d")
    result = invoke("--data-dir", data, "process", "--json", str(inbox))
    assert result.exit_code == 1  # one input was rejected
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["input"].rsplit("/", 1)[1] for r in rows] == ["a.pdf", "b.pdf"]
    assert [(r["status"], r["reason_code"]) for r in rows] == [("COMPLETED", None), ("REJECTED", "empty_file")]
    again = invoke("--data-dir", data, "reprocess", rows[0]["document_id"])
    assert again.exit_code == 0
    assert json.loads(again.output) == {"document_id": rows[0]["document_id"], "attempt": 2,
                                        "status": "COMPLETED", "reason_code": None}


def test_watch_once_processes_what_is_there(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copyfile(FILES / "screenshot_labs.png", inbox / "labs.png")
    result = invoke("--data-dir", str(tmp_path / "d"), "watch", "--once", str(inbox))
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.output.splitlines()]
    assert row["status"] == "COMPLETED"
    notices = (tmp_path / "d" / "notices.jsonl").read_text().splitlines()
    assert len(notices) == 1


def test_unknown_setting_value_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDINTAKE_STORE_BACKEND", "ftp")
    result = CliRunner().invoke(cli.main, ["--data-dir", str(tmp_path), "process", str(FILES / "empty.pdf")])
    assert result.exit_code != 0 and "store_backend must be one of" in result.output


def test_watch_picks_up_files_as_they_arrive(tmp_path):
    """The long-running mode: a file dropped in later is processed once, with one notice."""
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO

    inbox, data = tmp_path / "in", tmp_path / "d"
    inbox.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDINTAKE_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import cli; cli.main()", "--data-dir", str(data), "watch", "--interval", "0.2",
         str(inbox)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "PYTHONPATH": str(REPO)},
    )
    try:
        time.sleep(0.5)
        shutil.copyfile(FILES / "digital_referral.pdf", inbox / ".part")
        os.replace(inbox / ".part", inbox / "referral.pdf")  # as an uploader finishing a file
        notices = data / "notices.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (notices.exists() and notices.read_text().strip()):
            time.sleep(0.2)
        time.sleep(1.0)  # a few more scans: the same file must not be processed again
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    lines = notices.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "COMPLETED", err
    assert json.loads(out.splitlines()[0])["status"] == "COMPLETED"


def test_one_local_runtime_per_data_folder(tmp_path):
    from compute.runtime import LocalRuntime
    from pipeline.errors import ConfigError, ExitCode
    from pipeline.settings import Settings

    settings = Settings.load(data_dir=tmp_path / "d")
    with LocalRuntime(settings):
        try:
            LocalRuntime(settings)
            raise AssertionError("a second runtime on the same data folder must be refused")
        except ConfigError as exc:
            assert "another medintake process" in exc.message
        result = CliRunner().invoke(cli.main, ["--data-dir", str(tmp_path / "d"), "process",
                                               str(FILES / "empty.pdf")])
        assert result.exit_code == ExitCode.CONFIG and "another medintake process" in result.output
    with LocalRuntime(settings):  # released on close
        pass


# ---------------------------------------------------------------------------------------------
# Global options: before or after the command name, one definition
# ---------------------------------------------------------------------------------------------

def _all_commands(group, path=()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _all_commands(command, (*path, name))


def test_data_dir_after_the_subcommand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default data folder would land here
    data = tmp_path / "after"
    result = invoke("process", "--json", "--data-dir", str(data), str(FILES / "digital_referral.pdf"))
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert row["status"] == "COMPLETED"
    assert (data / "medintake.db").is_file() and (data / "notices.jsonl").is_file()
    assert not (tmp_path / ".medintake").exists()
    assert row["outputs"]["text"].startswith(str(data))


def test_after_the_subcommand_wins_over_before(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    result = invoke("--data-dir", str(before), "db", "upgrade", "--data-dir", str(after))
    assert result.exit_code == 0, result.output
    assert (after / "medintake.db").is_file() and not (before / "medintake.db").exists()
    # ...and a global option left out after the name keeps the value given before it
    result = invoke("--data-dir", str(before), "db", "upgrade")
    assert result.exit_code == 0 and (before / "medintake.db").is_file()
    # ...and between a group and its subcommand
    between = tmp_path / "between"
    result = invoke("db", "--data-dir", str(between), "upgrade")
    assert result.exit_code == 0 and (between / "medintake.db").is_file()


def test_every_command_takes_every_global_option():
    """A command added later without the global options fails here."""
    wanted = {opt for o in cli._global_options() for opt in o.opts}
    commands = list(_all_commands(cli.main))
    assert {"process", "watch", "reprocess", "db", "db upgrade"} <= {" ".join(p) for p, _ in commands}
    for path, command in [((), cli.main), *commands]:
        have = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert wanted <= have, f"'medintake {' '.join(path)}' lacks {sorted(wanted - have)}"
        assert "--data-dir" in CliRunner().invoke(cli.main, [*path, "--help"]).output


def test_verbose_after_the_subcommand_logs_ids_never_names(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    src = tmp_path / "Jane Doe referral.pdf"
    shutil.copyfile(FILES / "digital_referral.pdf", src)
    proc = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "process", str(src), "-v",
                           "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(line["level"] == "INFO" for line in info)
    assert "Jane" not in proc.stderr
