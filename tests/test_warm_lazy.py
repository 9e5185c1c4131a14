"""The warm server finishes its libraries' lazy loads before it forks (compute/warm.py: complete_lazy_loads)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from compute.warm import complete_lazy_loads

REPO = Path(__file__).resolve().parents[1]


def test_nothing_is_loaded_for_libraries_the_server_does_not_have():
    assert complete_lazy_loads({}) == []


def _run(code: str, env_extra: dict[str, str] | None = None) -> list[str]:
    import os

    env = {**os.environ, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env=env)
    return out.stdout.split()


def test_pillow_numpy_and_the_sqlite_dialect_are_loaded_once_in_the_server(tmp_path):
    code = (
        "import sys, PIL.Image, numpy, sqlalchemy\n"
        "before = ['WEBP' in PIL.Image.SAVE, 'numpy.ma' in sys.modules, 'sqlalchemy.dialects.sqlite' in sys.modules]\n"
        "from compute.warm import complete_lazy_loads\n"
        "loaded = complete_lazy_loads()\n"
        "after = ['WEBP' in PIL.Image.SAVE, 'numpy.ma' in sys.modules, 'sqlalchemy.dialects.sqlite' in sys.modules]\n"
        "print(*before, *after, ','.join(loaded))\n"
    )
    words = _run(code, {"MEDINTAKE_DATA_DIR": str(tmp_path / "data")})
    assert words[:3] == ["False", "False", "False"]  # lazy indeed: a worker would load each itself
    assert words[3:6] == ["True", "True", "True"]
    assert words[6] == "numpy.ma,sqlalchemy.dialects.sqlite,PIL.Image.init"


def test_a_server_database_skips_the_sqlite_dialect(tmp_path):
    code = (
        "import sys, sqlalchemy\n"
        "from compute.warm import complete_lazy_loads\n"
        "print(','.join(complete_lazy_loads()) or '-', 'sqlalchemy.dialects.sqlite' in sys.modules)\n"
    )
    words = _run(code, {"MEDINTAKE_DATA_DIR": str(tmp_path / "data"),
                        "MEDINTAKE_DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1:5432/x"})
    assert words == ["-", "False"]
