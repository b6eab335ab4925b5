"The installed package, its console script and its generated files."
import ast, importlib, inspect, io, json, pkgutil, pydoc, re, subprocess, sys, textwrap, tokenize
from dataclasses import fields, is_dataclass
from pathlib import Path

from fastcore.docments import docments

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


FRONT_DOOR = ['Circuit', 'CircuitBatchManager', 'DataEncoder', 'Database', 'HardwareEfficientQuantumLayer',
              'NoiseModel', 'Observable', 'QuantumClassifier', 'QuantumDatabase', 'QuantumModel', 'QuantumRegressor',
              'QuantumTrainer', 'StateManager', 'TrainingConfig',
              'X', 'Y', 'Z', 'available_backends', 'get_backend', 'load_data', 'minmax_to_angles']


def test_front_door_names():
    assert sorted(qstore.__all__) == FRONT_DOOR
    assert set(FRONT_DOOR) <= set(dir(qstore))
    for name in FRONT_DOOR:
        obj = getattr(qstore, name)
        assert getattr(importlib.import_module(obj.__module__), name) is obj


def test_import_qstore_loads_no_layer():
    heavy = ('qstore', 'numpy', 'cirq', 'qiskit')
    probe = f"import sys, qstore; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    r = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert r.stdout.strip() == "['qstore']"


def _public_objects():
    "Every public function and class named in a module's `__all__`, and the public methods those classes define"
    for info in pkgutil.walk_packages(qstore.__path__, 'qstore.'):
        if info.name.endswith('_modidx'): continue
        try:
            mod = importlib.import_module(info.name)
        except ImportError as e:  # a framework bridge whose extra is not installed says so; anything else fails
            if "pip install 'qstore[" in str(e): continue
            raise
        for name in getattr(mod, '__all__', []):
            obj = getattr(mod, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != mod.__name__: continue
            yield obj
            if inspect.isclass(obj):
                yield from (m for k, m in vars(obj).items() if inspect.isfunction(m) and not k.startswith('_'))


def _flat(text): return ' '.join(re.sub(r'(?m)^\s*\|', '', text).split())


def _own_params(fn):
    """`fn`'s own parameter names, and the comment on the line where its body starts, which explains the body
    (`def f(x): return -x  # why`). Parameters that `@delegates` adds are documented where they are defined."""
    src = textwrap.dedent(inspect.getsource(fn))
    node = ast.parse(src).body[0]
    a = node.args
    names = {p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if p}
    toks = tokenize.generate_tokens(io.StringIO(src).readline)
    on_first = (t.string for t in toks if t.type == tokenize.COMMENT and t.start[0] == node.body[0].lineno)
    return names, next((c.lstrip('#').strip() for c in on_first), None)


def _source_docments(obj):
    "Parameter meanings from the definition's comments as fastcore reads them, without `self`, `cls` and body comments"
    dms = {k: v for k, v in docments(obj, returns=False).items() if v and k not in ('self', 'cls')}
    if inspect.isclass(obj) and is_dataclass(obj): return dms
    fn = obj.__dict__.get('__init__') if inspect.isclass(obj) else obj  # its own __init__, not an inherited one
    if not inspect.isfunction(fn): return {}
    names, body_comment = _own_params(fn)
    return {k: v for k, v in dms.items() if k in names and v != body_comment}


def test_help_shows_every_documented_parameter():
    missing, checked = [], 0
    for obj in _public_objects():
        page = _flat(pydoc.render_doc(obj, renderer=pydoc.plaintext))
        for param, meaning in _source_docments(obj).items():
            checked += 1
            if _flat(meaning) not in page: missing.append(f"{obj.__module__}.{obj.__qualname__}({param}): {meaning}")
    assert not missing, '\n'.join(missing)
    assert checked > 500


def test_help_documents_every_training_config_field():
    from qstore.ml.trainer import TrainingConfig
    page = _flat(pydoc.render_doc(TrainingConfig, renderer=pydoc.plaintext))
    docs = _source_docments(TrainingConfig)
    assert [f.name for f in fields(TrainingConfig)] == list(docs)
    assert all(f"{name} :" in page and _flat(meaning) in page for name, meaning in docs.items())


def _own_names(obj) -> list:
    "Parameters `obj` itself declares (dataclass fields from its own annotations), without self, cls, *args, **kwargs"
    if inspect.isclass(obj) and is_dataclass(obj): return list(obj.__dict__.get('__annotations__', {}))
    fn = obj.__dict__.get('__init__') if inspect.isclass(obj) else obj  # its own __init__, not an inherited one
    if not inspect.isfunction(fn): return []
    a = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0].args
    return [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs] if p.arg not in ('self', 'cls')]


def test_every_public_parameter_has_a_meaning():
    "help() can only show what the source says: every named parameter of the public API carries a docments comment"
    missing, checked = [], 0
    for obj in _public_objects():
        docs = _source_docments(obj)
        for name in _own_names(obj):
            checked += 1
            if name not in docs: missing.append(f"{obj.__module__}.{obj.__qualname__}({name})")
    assert not missing, '\n'.join(missing)
    assert checked > 1000
