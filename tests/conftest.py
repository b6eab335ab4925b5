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
    """Import a bench/ script as a module (`bench_script('peers')`). bench/ is put at the *end* of the path, so a
    script's imports of its siblings (`common`, `simulator`) work and it shadows no installed package."""
    bench_dir = str(Path(__file__).resolve().parent.parent / 'bench')
    def load(name):
        if bench_dir not in sys.path: sys.path.append(bench_dir)  # another test may have taken it off
        return importlib.import_module(name)
    yield load
    if bench_dir in sys.path: sys.path.remove(bench_dir)
