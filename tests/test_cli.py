"""The command line: db upgrade, the summary table, watch, reprocess, errors."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from conftest import FILES

import cli


def invoke(*args):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def _head() -> str:
    from alembic.script import ScriptDirectory

    from pipeline import database
    from pipeline.settings import Settings

    return ScriptDirectory.from_config(database.alembic_config(Settings.load())).get_current_head()


def test_db_upgrade(tmp_path):
    result = invoke("--data-dir", str(tmp_path), "db", "upgrade")
    assert result.exit_code == 0 and f"revision {_head()}" in result.output
    assert (tmp_path / "medintake.db").is_file()


def test_process_prints_a_summary_table_and_exits_zero(tmp_path):
    result = invoke("--data-dir", str(tmp_path / "d"), "process", str(FILES / "digital_referral.pdf"))
    assert result.exit_code == 0, result.output
    assert "COMPLETED" in result.output and "1 of 1 completed" in result.output


@pytest.mark.parametrize("shape", ["per_document", "array"])
def test_process_folder_in_name_order_and_reprocess(tmp_path, monkeypatch, shape):
    monkeypatch.setenv("MEDINTAKE_JOB_SHAPE", shape)  # both job shapes (conftest pins per_document)
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
    again = invoke("--data-dir", data, "reprocess", "--json", rows[0]["document_id"])
    assert again.exit_code == 0
    row = json.loads(again.output)
    assert {k: row[k] for k in ("document_id", "attempt", "status", "reason_code")} == {
        "document_id": rows[0]["document_id"], "attempt": 2, "status": "COMPLETED", "reason_code": None}
    shown = json.loads(invoke("--data-dir", data, "documents", "show", "--json", rows[0]["document_id"]).output)
    kinds = {"array": ["process"], "per_document": ["convert", "entities", "extract"]}[shape]
    assert [sorted(j["kind"] for j in a["jobs"]) for a in shown["attempts"]] == [kinds, kinds]
    assert {"extract", "entities", "convert"} <= set(shown["timings"])
    assert invoke("--data-dir", data, "show", rows[1]["document_id"]).exit_code == 0


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


def test_process_data_dir_after_the_name_wins_over_before_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before, after = tmp_path / "before", tmp_path / "after"
    pdf = str(FILES / "digital_referral.pdf")
    result = invoke("--data-dir", str(before), "process", "--json", "--data-dir", str(after), pdf)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["text"].startswith(str(after))
    assert (after / "medintake.db").is_file() and not before.exists()
    # a global option left out after the name keeps the value given before it
    result = invoke("--data-dir", str(before), "process", "--json", pdf)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["text"].startswith(str(before))
    assert (before / "medintake.db").is_file() and (before / "notices.jsonl").is_file()
    assert not (tmp_path / ".medintake").exists()


def test_db_upgrade_with_data_dir_after_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "after"
    result = invoke("db", "upgrade", "--data-dir", str(data))
    assert result.exit_code == 0 and f"revision {_head()}" in result.output, result.output
    assert (data / "medintake.db").is_file() and not (tmp_path / ".medintake").exists()
    # ...between a group and its subcommand
    between = tmp_path / "between"
    result = invoke("db", "--data-dir", str(between), "upgrade")
    assert result.exit_code == 0 and (between / "medintake.db").is_file()
    # ...typed last wins, wherever the earlier ones were
    first, last = tmp_path / "first", tmp_path / "last"
    result = invoke("--data-dir", str(first), "db", "--data-dir", str(first), "upgrade", "--data-dir", str(last))
    assert result.exit_code == 0 and (last / "medintake.db").is_file() and not first.exists()


def test_a_default_or_environment_value_after_the_name_never_replaces_a_typed_one():
    """The mechanism, with a global option like those to come (repeatable, a default, an env var)."""
    import click

    region = cli.GlobalOption(["--region"], multiple=True, default=("us-east-1",), envvar="MEDINTAKE_X_REGION")

    @click.group(params=[region])
    def root() -> None:
        pass

    @root.command(params=[region])
    @click.pass_context
    def show(ctx) -> None:
        click.echo(",".join(cli._global(ctx, "region")))

    def run(*args, env=None):
        result = CliRunner().invoke(root, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output.strip()

    assert run("show") == "us-east-1"
    assert run("--region", "eu-west-1", "show") == "eu-west-1"
    assert run("--region", "eu-west-1", "show", "--region", "ap-south-1", "--region", "sa-east-1") \
        == "ap-south-1,sa-east-1"
    assert run("--region", "eu-west-1", "show", env={"MEDINTAKE_X_REGION": "ca-central-1"}) == "eu-west-1"
    assert run("show", env={"MEDINTAKE_X_REGION": "ca-central-1"}) == "ca-central-1"


def test_every_command_takes_every_global_option(tmp_path):
    """A command added later without the global options fails here."""
    commands = list(_all_commands(cli.main))
    assert {"process", "watch", "reprocess", "db", "db upgrade"} <= {" ".join(p) for p, _ in commands}
    for path, command in [((), cli.main), *commands]:
        where = f"'medintake {' '.join(path)}'"
        missing = [o.opts for o in cli.GLOBAL_OPTIONS if o not in command.params]
        assert not missing, f"{where} lacks {missing}"
        help_text = CliRunner().invoke(cli.main, [*path, "--help"]).output
        for option in cli.GLOBAL_OPTIONS:
            assert option.opts[-1] in help_text, f"{where} --help does not show {option.opts}"
            for name in option.opts:
                typed = [name] if option.is_flag else [name, str(tmp_path)]
                result = CliRunner().invoke(cli.main, [*path, *typed, "--help"])
                assert result.exit_code == 0, f"{where} {' '.join(typed)}: {result.output}"


def test_verbose_after_the_subcommand_logs_ids_never_names(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    src = tmp_path / "Jane Doe referral.pdf"
    shutil.copyfile(FILES / "digital_referral.pdf", src)
    proc = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "process", str(src), "-v",
                           "--data-dir", str(tmp_path / "d")],
                          check=False, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(line["level"] == "INFO" for line in info)
    assert "Jane" not in proc.stderr
