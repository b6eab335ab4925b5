"Shared pytest fixtures."
import importlib, subprocess, sys
from pathlib import Path

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


@pytest.fixture(scope='session')
def bench_script():
    """Import a bench/ script as a module (`bench_script('peers')`). bench/ goes at the *end* of the path for the
    session, so a script's imports of its siblings (`common`, `simulator`) work, and it shadows no installed package."""
    bench_dir = str(Path(__file__).resolve().parent.parent / 'bench')
    sys.path.append(bench_dir)
    try: yield importlib.import_module
    finally:
        if bench_dir in sys.path: sys.path.remove(bench_dir)  # bench/distributed.py may have moved it
