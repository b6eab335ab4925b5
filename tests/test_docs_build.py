"""The pure parts of the docs builder (tools/docs.py): what each turns notebook Markdown into."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location('docs_build', Path(__file__).parent.parent / 'tools' / 'docs.py')
docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(docs)


def test_split_directives():
    dirs, code = docs.split_directives('#| echo: false\n#| output: asis\n#| ionq\nshow_doc(f)\n#| not a directive')
    assert dirs == {'echo': 'false', 'output': 'asis', 'ionq': ''}
    assert code == 'show_doc(f)\n#| not a directive'


def test_fence_outlasts_backticks_inside():
    assert docs.fence('a ```` b').startswith('`````\n')
    assert docs.fence('x', 'python') == '```python\nx\n```'


def test_math_becomes_mathml_outside_code_only():
    pytest.importorskip('latex2mathml')
    out = docs.tex_to_mathml(r'energy $\langle Z_0 \rangle$ and `$HOME`' + '\n\n$$\\frac{1}{2}$$')
    assert out.count('<math') == 2 and 'display="block"' in out and '`$HOME`' in out
    prose = 'It costs $97.50 with mitigation and $30 without; filters use `{"$eq": 1}`.'
    assert docs.tex_to_mathml(prose) == prose  # dollars in prose and code stay text (pandoc's rule)
    assert '<math' not in docs.tex_to_mathml('```\n$x$\n```')


def test_table_code_pipes():
    md = '| gate | json |\n|---|---|\n| `cnot` | `"cnot" \\| "z"` and a \\| b |\n`x \\| y`'
    assert docs.table_code_pipes(md).splitlines()[2] == '| `cnot` | `"cnot" | "z"` and a \\| b |'
    assert docs.table_code_pipes(md).splitlines()[3] == '`x \\| y`'  # not a table row


def test_links_become_relative_and_dead_anchors_are_dropped():
    base = 'https://example.org/lib/'
    md = f'[`f`]({base}layers.html#quantummodel.spec) and [`_h`]({base}circuits.html#_h)'
    rel = docs.relative_links(md, Path('tutorials/t.md'), base)
    assert rel == '[`f`](../layers.md#quantummodel-spec) and [`_h`](../circuits.md#_h)'
    anchors = {'layers.md': {'quantummodel-spec'}, 'circuits.md': {'circuit'}}
    assert docs.drop_dead_anchors(rel, 'tutorials/t.md', anchors) == '[`f`](../layers.md#quantummodel-spec) and `_h`'


def test_param_table_from_docments():
    def f(n: int,  # how many
          name='x',  # what to call it
          flag=False
          ) -> str:  # the result
        "doc"
    rows = docs.param_table(f).splitlines()
    assert rows[2] == '| **n** | `int` |  | how many |'
    assert rows[3] == "| **name** | `str` | `'x'` | what to call it |"  # docments infers the type from the default
    assert rows[4] == '| **flag** | `bool` | `False` |  |'
    assert rows[5] == '| **returns** | `str` |  | the result |'
    assert docs.param_table(lambda: None) == ''
