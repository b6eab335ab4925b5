"The repository tools: tools/split_statements.py and tools/check_notebooks.py on small inputs."
import ast
import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'tools' / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


split = load_tool('split_statements')
check = load_tool('check_notebooks')

JOINED = '''import os; import sys
x = 1; y = 2;  # two
def f(a): b = a; return b
class A:
    def g(self): self.x = 1; self.y = {1: 2}; return self
for i in range(3): total = i; total += 1
s = "a; b"; t = f"{x};{y}"
if x: a = (1,
           2); b = 3
else: pass;
try: u = 1; v = 2
except ValueError as e: msg = str(e); raise
'''
SPLIT = '''import os
import sys
x = 1
y = 2  # two
def f(a):
    b = a
    return b
class A:
    def g(self):
        self.x = 1
        self.y = {1: 2}
        return self
for i in range(3):
    total = i
    total += 1
s = "a; b"
t = f"{x};{y}"
if x:
    a = (1,
           2)
    b = 3
else: pass
try:
    u = 1
    v = 2
except ValueError as e:
    msg = str(e)
    raise
'''


def test_split_source_puts_one_statement_per_line():
    assert split.split_source(JOINED) == SPLIT
    assert split.split_source(SPLIT) == SPLIT  # idempotent


def test_split_source_keeps_the_meaning():
    "The loop body stays in the loop: a naive split of `for ...: a; b` would run `b` once."
    src = 'out = []\nfor i in range(3): out.append(i); out.append(-i)\nif False: out.append(9); out.append(10)\n'
    env_a, env_b = {}, {}
    exec(src, env_a)
    exec(split.split_source(src), env_b)
    assert env_a['out'] == env_b['out'] == [0, 0, 1, -1, 2, -2]
    assert ast.dump(ast.parse(src)) == ast.dump(ast.parse(split.split_source(src)))


def test_split_notebook_keeps_ids_outputs_and_magics(tmp_path):
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell('#| export\na = 1; b = 2\n%time a; b')
    code.id, code.outputs = 'c1', [nbformat.v4.new_output('stream', text='hi\n')]
    md = nbformat.v4.new_markdown_cell('a; b')
    md.id = 'm1'
    nb.cells = [code, md]
    path = tmp_path / 'nb.ipynb'
    nbformat.write(nb, path)
    assert split.main([str(path)]) == 0
    cells = json.loads(path.read_text())['cells']
    assert ''.join(cells[0]['source']) == '#| export\na = 1\nb = 2\n%time a; b'
    assert cells[0]['id'] == 'c1' and ''.join(cells[0]['outputs'][0]['text']) == 'hi\n'
    assert ''.join(cells[1]['source']) == 'a; b'
    assert split.main(['--check', str(path)]) == 0  # nothing left to split


def notebook(tmp_path, *cells):
    nb = nbformat.v4.new_notebook()
    for i, (kind, src) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(src) if kind == 'md' else nbformat.v4.new_code_cell(src)
        cell.id = f'c{i}'
        nb.cells.append(cell)
    path = tmp_path / 'nb.ipynb'
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize('cells,kind,cell_id', [
    ([('md', '# Title'), ('md', '# ## Section')], 'heading', 'c1'),
    ([('md', '# Title'), ('md', 'Some text.\n\n# Every method gives...')], 'title', 'c1'),
    ([('code', '#| export\nimport numpy as np\nx = np.zeros(3)')], 'imports', 'c0'),
    ([('code', 'x = 1\nfrom pathlib import Path')], 'imports', 'c0'),
    ([('code', '#| export\n' + 'x = 1\n' * 101)], 'length', 'c0'),
])
def test_check_notebook_failures(tmp_path, cells, kind, cell_id):
    failures = check.check_notebook(notebook(tmp_path, *cells))
    assert [(k, c) for k, c, _ in failures] == [(kind, cell_id)]


def test_check_notebook_passes_clean_cells(tmp_path):
    path = notebook(tmp_path, ('md', '# Title\n\n> summary'),
                    ('code', '#| export\nfrom __future__ import annotations\nimport os'),
                    ('md', '## Section\n\nText.'), ('code', '#| hide\n%time x = 1\nx = 2'),
                    ('code', '#| export\n' + 'x = 1\n' * 99))
    assert check.check_notebook(path) == []
    assert check.main([str(path)]) == 0
