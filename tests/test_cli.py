"The `qstore` console script as a user meets it: one-line errors, `--debug`, `--home` anywhere, config files."
import json, os, subprocess, sys
from dataclasses import fields
from pathlib import Path

import pytest

from qstore.ml.trainer import TrainingConfig
from qstore.storage.db import Database

ROOT = Path(__file__).resolve().parent.parent


def qstore(*args, cwd):
    "Run the installed console script in `cwd` with a $QSTORE_HOME of its own."
    exe = Path(sys.executable).parent / 'qstore'
    env = {**os.environ, 'QSTORE_HOME': str(Path(cwd) / 'default-home'), 'OPENBLAS_NUM_THREADS': '1'}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MISTAKES = {  # name: (config file text or None, arguments after `qstore`, words the one line must hold)
    'missing config': (None, ['train', 'nope.yaml'], 'qstore train: config file not found: nope.yaml'),
    'scalar yaml': ('just a string\n', ['train', 'c.yaml'], "must hold a mapping of settings, got str 'just a string'"),
    'list section': ('training: [1, 2]\n', ['train', 'c.yaml'], "section 'training' of c.yaml must be a mapping"),
    'infinite rate': ('training:\n  learning_rate: .inf\n', ['train', 'c.yaml'],
                      'learning_rate must be finite, got inf'),
    'string number': ('training:\n  learning_rate: 1e-3\n', ['train', 'c.yaml'],
                      "learning_rate must be a float, got '1e-3' (YAML reads 1e-3 as a string; write a decimal point"),
    'wrong type': ('training:\n  epochs: [3]\n', ['train', 'c.yaml'], 'epochs must be an int, got [3]'),
    'unknown backend': ('training:\n  backend: default.qubit\n', ['train', 'c.yaml'],
                        "unknown backend 'default.qubit'"),
    'misspelt key': ('training:\n  lr: 0.1\n', ['train', 'c.yaml'], "'lr' (did you mean 'learning_rate'?)"),
    'bad data name': ('data:\n  name: 3\n', ['train', 'c.yaml'], 'data.name must be a string, got 3'),
    'bad demo epochs': (None, ['demo', '--epochs', '0', '--home', 'h'], 'qstore demo: invalid TrainingConfig: epochs'),
    'typo home': (None, ['models', 'list', '--home', 'typo'], 'qstore models: no qstore database at'),
}


@pytest.mark.parametrize('case', list(MISTAKES))
def test_a_user_mistake_is_one_line_on_stderr(tmp_path, case):
    text, args, words = MISTAKES[case]
    if text is not None: write(tmp_path / 'c.yaml', text)
    r = qstore(*args, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.splitlines()) == 1 and words in r.stderr, r.stderr
    assert r.stderr.startswith(f"qstore {args[0]}: ") and 'Traceback' not in r.stderr


USAGE_MISTAKES = {  # arguments after `qstore`: words the one line must hold (argparse's own usage errors)
    ('--nope',): "qstore: unrecognized arguments: --nope",
    ('bogus',): "qstore: argument COMMAND: invalid choice: 'bogus'",
    ('train',): "qstore train: the following arguments are required: config",
    ('train', 'c.yaml', '--bogus'): "qstore train: unrecognized arguments: --bogus",
    ('models', 'show'): "qstore models show: the following arguments are required: name",
    ('ionq-emulator', '--port', 'x'): "qstore ionq-emulator: argument --port: invalid int value: 'x'",
}


@pytest.mark.parametrize('args', list(USAGE_MISTAKES))
def test_a_usage_mistake_is_one_line_on_stderr(tmp_path, args):
    r = qstore(*args, cwd=tmp_path)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(USAGE_MISTAKES[args]), r.stderr
    assert lines[0].endswith('--help shows usage)')


def test_debug_shows_the_traceback(tmp_path):
    r = qstore('train', 'nope.yaml', '--debug', cwd=tmp_path)
    assert r.returncode != 0 and 'Traceback (most recent call last)' in r.stderr
    assert 'FileNotFoundError: config file not found: nope.yaml' in r.stderr


def test_models_takes_home_after_the_action_and_says_when_the_registry_is_empty(tmp_path):
    Database.open(tmp_path / 'h').close()
    for args in (['models', 'list', '--home', 'h'], ['models', '--home', 'h', 'list']):
        r = qstore(*args, cwd=tmp_path)
        assert (r.returncode, r.stderr) == (0, '')
        assert r.stdout == f"no registered models in {(tmp_path / 'h').resolve()}\n"


def test_a_mistyped_home_creates_nothing(tmp_path):
    for args in (['list'], ['show', 'm'], ['promote', 'm', '1', 'production']):
        r = qstore('models', *args, '--home', 'typo', cwd=tmp_path)
        assert r.returncode == 1 and str((tmp_path / 'typo').resolve()) in r.stderr
    r = qstore('models', 'list', cwd=tmp_path)  # the default home ($QSTORE_HOME) is not created either
    assert r.returncode == 1 and 'default-home' in r.stderr
    assert not (tmp_path / 'typo').exists() and not (tmp_path / 'default-home').exists()


def test_demo_has_its_command_line():
    r = qstore('demo', '--help', cwd=ROOT)
    assert r.returncode == 0 and '--retrain' in r.stdout


def test_a_config_with_training_and_data_only_trains(tmp_path):
    write(tmp_path / 'min.yaml', 'training:\n  epochs: 1\n  progress: false\ndata:\n  name: parity\n')
    r = qstore('train', 'min.yaml', '--home', 'h', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res['data'] == '4-bit parity (all 16 inputs)' and 0 <= res['train']['accuracy'] <= 1


def test_the_example_config_trains_a_classifier(tmp_path):
    r = qstore('train', ROOT / 'examples' / 'train.yaml', '--home', 'h', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res['test']['accuracy'] >= 0.9  # setosa vs versicolor is linearly separable; 5 seeded epochs reach 0.93
    r = qstore('models', 'list', '--home', 'h', cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith('iris-example ')


def test_train_help_describes_the_schema(tmp_path):
    r = qstore('train', '--help', cwd=tmp_path)
    assert r.returncode == 0
    words = [f.name for f in fields(TrainingConfig)] + ['encoder', 'observables', 'n_outputs', 'test_fraction', 'scale']
    assert [w for w in words if w not in r.stdout] == []
    assert 'examples/train.yaml' in r.stdout
