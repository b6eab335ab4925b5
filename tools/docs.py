"""Build the documentation site from the notebooks into `_docs/`, without Quarto (which no package registry ships).

    python tools/docs.py            # nbdev's notebook processing (cached in _proc/), then mkdocs-material
    python tools/docs.py --force    # re-process every notebook

Stage 1 is nbdev's own `proc_nbs`: directives, hidden cells removed, a `show_doc` for every exported name, links.
Stage 2 turns each processed notebook into a Markdown page: a parameter table from the docments of every `show_doc`,
TeX math converted to MathML at build time (latex2mathml), plots written as image files, nbdev's absolute doc links
made relative. Stage 3 is `mkdocs build --strict` with mkdocs-material (search, page table of contents, highlighting).
Nothing on a page loads from a CDN: no web fonts, no MathJax, no repository widget.
The Quarto route stays open: `nbs/_quarto.yml` and `nbs/nbdev.yml` are what `nbdev-docs` writes for this project.
"""
import argparse, base64, importlib, importlib.util, inspect, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, PROC, SRC, SITE = ROOT / 'nbs', ROOT / '_proc', ROOT / '_docs_src' / 'pages', ROOT / '_docs'
LAYERS = {'0': 'Quantum core', '1': 'Backends', '2': 'IonQ', '3': 'Circuit pipeline', '4': 'Gradients',
          '5': 'Storage', '6': 'Training engine', '7': 'Framework bridges', '9': 'Jobs and command line'}


def process_notebooks(force=False, n_workers=2) -> Path:
    "nbdev's docs processing of every notebook into `_proc/` (cached by modification time)."
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.serve import proc_nbs
    refresh_quarto_yml()
    return proc_nbs(str(NBS), n_workers=n_workers, force=force)


# Markdown conversion of one processed notebook

_re_directive = re.compile(r'^#\|\s*([\w-]+)\s*(?::\s*(.*))?$')


def split_directives(src: str) -> tuple:
    "(directives dict, source without its leading `#|` lines)"
    lines, dirs = src.splitlines(), {}
    while lines and (m := _re_directive.match(lines[0].strip())):
        dirs[m.group(1)] = (m.group(2) or '').strip().strip('"\'')
        lines.pop(0)
    return dirs, '\n'.join(lines).strip('\n')


def fence(text: str, lang='') -> str:
    "`text` in a code fence longer than any backtick run inside it."
    n = max([3] + [len(r) + 1 for r in re.findall(r'`{3,}', text)])
    return f"{'`' * n}{lang}\n{text.rstrip()}\n{'`' * n}"


# Pandoc's rule for `$`: the opening one is followed by a non-space, the closing one follows a non-space and is not
# followed by a digit, so prose like "$97.50 ... and $30" stays prose.
_re_math = re.compile(r'\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|(?<![\\$])\$(?=\S)([^$\n]*?\S)\$(?!\d)', re.S)
_re_code = re.compile(r'(^(`{3,}|~{3,}).*?^\2[ \t]*$|`+[^`\n]*?`+)', re.S | re.M)


def tex_to_mathml(md: str) -> str:
    "Replace TeX math outside code with MathML, rendered by the browser itself."
    from latex2mathml.converter import convert
    def one(m):
        block = m.group(1) or m.group(2)
        tex = block if block is not None else (m.group(3) or m.group(4))
        out = convert(tex.strip(), display='block' if block is not None else 'inline')
        return f'\n\n{out}\n\n' if block is not None else out
    pieces, i = [], 0
    for m in _re_code.finditer(md):
        pieces.append(_re_math.sub(one, md[i:m.start()]))
        pieces.append(m.group(0))
        i = m.end()
    pieces.append(_re_math.sub(one, md[i:]))
    return ''.join(pieces)


def table_code_pipes(md: str) -> str:
    "GFM wants `\\|` for a pipe in a table's code span; Python-Markdown keeps code spans whole and would show the `\\`."
    def row(m): return re.sub(r'`[^`\n]*`', lambda c: c.group(0).replace('\\|', '|'), m.group(0))
    return re.sub(r'^\|.*$', row, md, flags=re.M)


def doc_url() -> str:
    "The site URL nbdev puts into its links (`doc_host` + `doc_baseurl`)."
    from nbdev.config import get_config
    cfg = get_config()
    return '/'.join(p for p in (cfg.doc_host.rstrip('/'), cfg.doc_baseurl.strip('/')) if p) + '/'


def relative_links(md: str, page: Path, base: str) -> str:
    "nbdev writes absolute links to the published site: point them at the pages of this build instead."
    up = '../' * (len(page.parts) - 1)
    def one(m):
        path, frag = m.group(1), m.group(2) or ''
        return f"{up}{Path(path).with_suffix('.md').as_posix()}{frag.replace('.', '-')}"
    return re.sub(re.escape(base) + r'([\w/.-]+?\.html)(#[\w.-]+)?', one, md)


def resolve(name: str, module: str | None):
    "The object `show_doc(name)` documents, looked up in the notebook's module."
    ns = dict(vars(importlib.import_module(module))) if module else {}
    obj = None
    for i, part in enumerate(name.split('.')):
        obj = ns.get(part) if i == 0 else getattr(obj, part, None)
        if obj is None: return None
    return obj


def param_table(obj) -> str:
    "Markdown table of the parameters: type, default and docment (empty for a callable without parameters)."
    from fastcore.docments import docments
    try: ds = docments(obj, full=True)
    except (TypeError, ValueError, OSError): return ''  # OSError: generated code (a dataclass __init__) has no source
    ds = {k: v for k, v in ds.items() if k not in ('self', 'cls')
          and not (k == 'return' and v['anno'] is inspect._empty and not v['docment'])}
    if not ds: return ''
    def cell(x): return str(x).replace('|', '\\|').replace('\n', ' ')  # plain text: escape the column separator
    def code(x): return f"`{str(x).replace('`', '').replace(chr(10), ' ')}`"  # a code span keeps its pipes whole
    def anno(a): return '' if a is inspect._empty else code(getattr(a, '__name__', a))
    rows = ['| | type | default | details |', '|---|---|---|---|']
    for k, v in ds.items():
        dflt = '' if v['default'] is inspect._empty else code(repr(v['default']))
        name = 'returns' if k == 'return' else k
        rows.append(f"| **{name}** | {anno(v['anno'])} | {dflt} | {cell(v['docment'] or '')} |")
    return '\n'.join(rows)


_re_showdoc = re.compile(r'^show_doc\(([\w.]+)')
_re_heading = re.compile(r'^(#{2,4}) ([\w.]+)\s*$', re.M)


def show_doc_md(md: str, name: str, module: str | None) -> str:
    "nbdev's `show_doc` Markdown with an anchor nbdev's links agree on, and the parameter table."
    md = _re_heading.sub(lambda m: f'{m.group(1)} {m.group(2)} {{ #{m.group(2).lower().replace(".", "-")} }}', md, 1)
    table = param_table(resolve(name, module)) if module else ''
    return md + ('\n\n' + table if table else '')


def output_md(out: dict, files: Path, stem: str, counter: list) -> str:
    "One cell output as Markdown: images become files, text stays text."
    kind = out['output_type']
    if kind == 'stream': return fence(re.sub(r'\x1b\[[0-9;]*m', '', ''.join(out['text'])), 'text')
    if kind == 'error': return fence(re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(out['traceback'])), 'text')
    data = out.get('data', {})
    for mime, ext in (('image/png', 'png'), ('image/jpeg', 'jpg'), ('image/svg+xml', 'svg')):
        if mime in data:
            counter[0] += 1
            name = f'{stem}_{counter[0]}.{ext}'
            files.mkdir(parents=True, exist_ok=True)
            raw = ''.join(data[mime])
            (files / name).write_bytes(raw.encode() if ext == 'svg' else base64.b64decode(raw))
            return f'![output {counter[0]}]({files.name}/{name})'
    if 'text/markdown' in data: return ''.join(data['text/markdown'])
    if 'text/html' in data: return f'<div class="nb-output" markdown="0">\n{"".join(data["text/html"])}\n</div>'
    if 'text/plain' in data: return fence(''.join(data['text/plain']), 'text')
    return ''


def default_exp(nb_path: Path) -> str | None:
    "The module a notebook exports to (nbdev's processing drops the `default_exp` cell)."
    m = re.search(r'#\|\s*default_exp\s+([\w.]+)', nb_path.read_text())
    return m and f'qstore.{m.group(1)}'


def notebook_md(nb: dict, page: Path, base: str, module: str | None) -> tuple:
    "(title, Markdown page) for one processed notebook."
    import yaml
    cells = nb['cells']
    front = {}
    if cells and cells[0]['cell_type'] == 'raw' and ''.join(cells[0]['source']).startswith('---'):
        front = yaml.safe_load(''.join(cells.pop(0)['source']).strip().strip('-')) or {}
    title = front.get('title', page.stem)
    parts = [f'# {title}']
    if front.get('description'): parts.append(f"> {front['description']}")
    files, counter = page.parent / f'{page.stem}_files', [0]
    for c in cells:
        src = ''.join(c.get('source', ''))
        if c['cell_type'] == 'markdown':
            parts.append(tex_to_mathml(table_code_pipes(src)))
            continue
        if c['cell_type'] != 'code': continue
        dirs, code = split_directives(src)
        if dirs.get('include') == 'false': continue
        sd = _re_showdoc.match(code)
        if code and dirs.get('echo') != 'false': parts.append(fence(code, 'python'))
        if dirs.get('output') == 'false': continue
        for o in c.get('outputs', []):
            md = output_md(o, SRC / files, page.stem, counter)
            if sd and o['output_type'] == 'execute_result': md = show_doc_md(md, sd.group(1), module)
            parts.append(md)
    return title, relative_links('\n\n'.join(p for p in parts if p.strip()) + '\n', page, base)


def page_path(nb_path: Path, front_file: str | None) -> Path:
    "Site path of a notebook: nbdev's `output-file`, in the notebook's folder."
    rel = nb_path.relative_to(PROC)
    name = front_file or re.sub(r'^\d+[a-z]?_', '', rel.stem) + '.html'
    return (rel.parent / name).with_suffix('.md')


def layer_of(nb_path: Path) -> str:
    rel = nb_path.relative_to(PROC)
    if rel.parts[0] == 'tutorials': return 'Tutorials'
    return LAYERS.get(rel.stem[0], 'Reference') if rel.stem[0].isdigit() else ''


_re_anchor = re.compile(r'\{ #([\w-]+) \}')
_re_doclink = re.compile(r'\[([^\]]*)\]\(((?:\.\./)*[\w/.-]+\.md)#([\w-]+)\)')


def drop_dead_anchors(md: str, page: str, anchors: dict) -> str:
    "nbdev links every backticked name it knows, private helpers too: keep links only to names a page documents."
    def one(m):
        target = (Path(page).parent / m.group(2)).as_posix()
        target = re.sub(r'[^/]+/\.\./', '', target)
        return m.group(0) if m.group(3) in anchors.get(target, ()) else m.group(1)
    return _re_doclink.sub(one, md)


def write_pages(proc: Path) -> list:
    "Markdown pages in `_docs_src/pages/`; returns the navigation as (section, title, page) in notebook order."
    base = doc_url()
    if SRC.exists(): shutil.rmtree(SRC)
    SRC.mkdir(parents=True)
    nav, mds = [], {}
    def order(p): return (p.stem != 'index', p.relative_to(proc).parts[0] == 'tutorials', str(p))
    nbs = sorted(proc.rglob('*.ipynb'), key=order)
    for p in nbs:
        if any(part.startswith(('.', '_')) for part in p.relative_to(proc).parts): continue
        nb = json.loads(p.read_text())
        first = ''.join(nb['cells'][0]['source']) if nb['cells'] else ''
        m = re.search(r'^output-file:\s*(\S+)', first, re.M)
        page = page_path(p, m and m.group(1))
        title, mds[page.as_posix()] = notebook_md(nb, page, base, default_exp(NBS / p.relative_to(proc)))
        nav.append((layer_of(p), 'Home' if p.stem == 'index' else title.replace('`', ''), page.as_posix()))
    anchors = {page: set(_re_anchor.findall(md)) for page, md in mds.items()}
    for page, md in mds.items():
        (SRC / page).parent.mkdir(parents=True, exist_ok=True)
        (SRC / page).write_text(drop_dead_anchors(md, page, anchors))
    (SRC / 'stylesheets').mkdir(exist_ok=True)
    (SRC / 'stylesheets' / 'extra.css').write_text(
        '.md-typeset table:not([class]) { font-size: .7rem; }\n'
        '.md-typeset math[display="block"] { display: block; margin: 1em 0; overflow-x: auto; }\n'
        '.md-typeset .nb-output { overflow-x: auto; }\n')
    return nav


def mkdocs_config(nav: list) -> dict:
    "mkdocs-material configuration: offline (system fonts, no repository widget), search, table of contents."
    import tomllib
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    sections = {}
    for section, title, page in nav: sections.setdefault(section, []).append({title: page})
    return {
        'site_name': 'Q-Store', 'site_description': project['description'], 'docs_dir': str(SRC),
        'site_dir': str(SITE), 'use_directory_urls': False, 'strict': True,
        'theme': {'name': 'material', 'font': False, 'features': ['navigation.sections', 'navigation.top',
                  'toc.follow', 'search.highlight', 'content.code.copy']},
        'plugins': ['search'],
        'extra_css': ['stylesheets/extra.css'],
        'markdown_extensions': ['tables', 'attr_list', 'md_in_html', 'admonition', 'footnotes',
                                {'toc': {'permalink': True}},
                                {'pymdownx.highlight': {'use_pygments': True}}, 'pymdownx.superfences'],
        'validation': {'links': {'not_found': 'warn', 'anchors': 'warn', 'absolute_links': 'warn'}},
        'nav': [entry for k, v in sections.items() for entry in ([{k: v}] if k else v)],
    }


def build(force=False) -> int:
    "Process the notebooks, write the pages, run mkdocs; returns the number of pages."
    import yaml
    missing = [m for m in ('mkdocs', 'material', 'pymdownx', 'latex2mathml') if importlib.util.find_spec(m) is None]
    if missing: sys.exit(f"missing {', '.join(missing)}: install the docs extra, pip install -e '.[docs]'")
    t0 = time.time()
    proc = process_notebooks(force=force)
    print(f'notebooks processed by nbdev into {proc.relative_to(ROOT)}/ ({time.time() - t0:.0f}s)')
    nav = write_pages(proc)
    cfg = SRC.parent / 'mkdocs.yml'
    cfg.write_text(yaml.safe_dump(mkdocs_config(nav), sort_keys=False))
    if SITE.exists(): shutil.rmtree(SITE)
    env = dict(os.environ, NO_MKDOCS_2_WARNING='1')
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '-q', '-f', str(cfg)], check=True, env=env)
    for _, _, page in nav:  # module docstrings link to nbdev's Markdown twin of each page, `NAME.html.md`
        md = re.sub(r'(\]\((?:\.\./)*[\w/.-]+)\.md([#)])', r'\1.html.md\2', (SRC / page).read_text())
        (SITE / Path(page).with_suffix('.html.md')).write_text(md)
    print(f'{len(nav)} pages built into {SITE.relative_to(ROOT)}/ in {time.time() - t0:.0f}s')
    return len(nav)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--force', action='store_true', help='ignore the _proc/ cache and process every notebook')
    build(force=ap.parse_args().force)
