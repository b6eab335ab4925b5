"The installed package, its console script and its generated files."
import json, subprocess, sys
from pathlib import Path

import qstore

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args):
    exe = Path(sys.executable).parent / 'qstore'  # the console script installed with the package
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_version_matches_package():
    r = run_cli('--version')
    assert r.returncode == 0 and r.stdout.strip() == qstore.__version__


def test_bench_writes_json(tmp_path):
    out = tmp_path / 'sim.json'
    r = run_cli('bench', '--repeat', '2', '--out', str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())['rows']
    assert {(row['n'], row['layers'], row['batch']) for row in rows} == {(4, 2, 16), (8, 4, 32), (12, 4, 32)}
    assert all(row['forward_ms'] > 0 for row in rows)
    assert 'circuits/s' in r.stdout


def test_readme_names_the_two_commands():
    text = (ROOT / 'README.md').read_text()
    assert "pip install -e '.[demo]' && .venv/bin/qstore demo" in text and 'bash .ci/run' in text


def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, 'tools/make_readme.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
