"Shared pytest fixtures."
import subprocess, sys

import pytest


@pytest.fixture
def run_python(tmp_path):
    "Run Python source as a script in a fresh process: `run_python(source, *args)` returns the CompletedProcess."
    def run(source, *args):
        script = tmp_path / 'script.py'
        script.write_text(source)
        return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                              timeout=300)
    return run
