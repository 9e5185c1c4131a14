"""Settings precedence: argument > MEDINTAKE_* environment > embedded default."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import Settings


def test_embedded_defaults_need_nothing():
    s = Settings.load(env={})
    assert s.store_backend == "folder" and s.compute_backend == "local" and s.notifier == "file"
    assert s.effective_database_url.startswith("sqlite:///") and s.effective_database_url.endswith("medintake.db")
    assert s.effective_notices_path.name == "notices.jsonl"
    assert (s.job_definitions_dir / "extract.json").is_file()


def test_argument_beats_environment_beats_default():
    env = {"MEDINTAKE_WORKERS": "3", "MEDINTAKE_OCR_LANGUAGES": "eng+deu", "MEDINTAKE_DATA_DIR": "/tmp/a"}
    s = Settings.load(env=env, workers=5)
    assert s.workers == 5 and s.ocr_languages == "eng+deu" and s.data_dir == Path("/tmp/a")
    assert Settings.load(env=env, workers=None).workers == 3  # None means "not given"


def test_round_trip_through_worker_environment():
    s = Settings.load(env={}, data_dir="/tmp/x", workers=2, database_url="postgresql://u@h/db")
    assert Settings.load(env=s.to_env()) == s


@pytest.mark.parametrize(
    "kwargs",
    [{"store_backend": "ftp"}, {"notifier": "sns"}, {"uploads_prefix": "/x/"}, {"workers": "many"}, {"nope": 1}],
)
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        Settings.load(env={}, **kwargs)
