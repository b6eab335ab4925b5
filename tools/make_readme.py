"""Write README.md from nbs/index.ipynb without Quarto (which cannot be installed here).

    python tools/make_readme.py          # rewrite README.md
    python tools/make_readme.py --check  # exit 1 if README.md is stale
"""
import sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parent.parent


def render(nb_path=ROOT / 'nbs' / 'index.ipynb') -> str:
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for c in nb.cells:
        src = c.source.strip()
        if c.cell_type == 'markdown':
            parts.append(src)
        elif not src.startswith('#| hide'):
            parts.append(f"```python\n{src}\n```")
            for o in c.get('outputs', []):
                text = o.get('text') or o.get('data', {}).get('text/plain', '')
                if text: parts.append(f"```\n{text.rstrip()}\n```")
    return '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py`')
    else:
        readme.write_text(text)
