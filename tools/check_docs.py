"""Open every page of the built site (`_docs/`) in headless Chromium and fail on what a reader would see broken.

    python tools/docs.py && python tools/check_docs.py

Served from 127.0.0.1 by the standard library; Debian's `/usr/bin/chromium` driven by Playwright (no browser
download). A page fails on: a console error or uncaught exception, a failed request, an image that does not load,
a resource from another host (the site must work offline), a broken internal link or anchor, a raw `#|` directive,
a line starting with `# #`, an error traceback in an output, or TeX left unrendered. Screenshots of the home page and
of a tutorial go to `_docs/screenshots/`.
"""
import functools, http.server, os, re, sys, threading, time
from pathlib import Path
from urllib.parse import urldefrag, urlparse, unquote
from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / '_docs'
CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']
TUTORIAL = 'tutorials/iris_classifier.html'
SEARCH = 'adjoint'

# What the reader sees in the page body, code blocks and math left out: (what, pattern)
TEXT_CHECKS = [
    ('raw #| directive', re.compile(r'^\s*#\|', re.M)),
    ("heading left as '# #'", re.compile(r'^\s*# #', re.M)),
    ('unrendered math', re.compile(r'\$\$|\\\(|\\\[|(?<![\\$])\$(?=\S)[^$\n]*?\S\$(?!\d)')),
]
CODE_CHECKS = [
    ('raw #| directive in code', re.compile(r'^\s*#\|', re.M)),
    ('error traceback in an output', re.compile(r'Traceback \(most recent call last\)|^\w*Error: ', re.M)),
]
# removes code and math from the live page (innerText of a detached copy loses its line breaks): run it last
VISIBLE_TEXT_JS = """() => {
  const a = document.querySelector('article');
  a.querySelectorAll('pre, code, math, .headerlink').forEach(e => e.remove());
  return a.innerText;
}"""
CODE_TEXT_JS = "() => Array.from(document.querySelectorAll('article pre')).map(e => e.innerText).join('\\n')"
BROKEN_IMAGES_JS = "() => Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
LINKS_JS = "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
IDS_JS = "() => Array.from(document.querySelectorAll('[id]')).map(e => e.id)"


def search_hits(page, base: str, query: str = SEARCH) -> int:
    "Documents the site's own search (a web worker over the bundled index) lists for `query` on the home page."
    page.goto(base + 'index.html', wait_until='load')
    page.fill('input.md-search__input', query)
    try: page.wait_for_selector('.md-search-result__item', timeout=15_000)
    except PlaywrightTimeout: return 0
    return int(re.search(r'\d+', page.inner_text('.md-search-result__meta') + ' 0').group(0))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


def serve(root: Path):
    "A stdlib HTTP server for `root` on a free loopback port, in a daemon thread."
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def external_resources(site: Path) -> list:
    "Scripts, stylesheets, images or frames a page would fetch from another host."
    pat = re.compile(r'<(?:script|img|iframe|source)\b[^>]*\bsrc=["\'](https?:)?//|'
                     r'<link\b[^>]*\bhref=["\'](https?:)?//[^"\']*["\'][^>]*>|@import\s+url\(["\']?https?://')
    bad = []
    for f in site.rglob('*.html'):
        for m in pat.finditer(f.read_text()):
            tag = m.group(0)
            if tag.startswith('<link') and not re.search(r'rel=["\']?(stylesheet|preload|modulepreload|icon)', tag):
                continue
            bad.append(f'{f.relative_to(site)}: {tag[:120]}')
    return bad


def check(site: Path = SITE) -> int:
    t0 = time.time()
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html')
                   if p.name != '404.html' and 'screenshots' not in p.parts)
    problems = [f'external resource: {b}' for b in external_resources(site)]
    nbs = ROOT / 'nbs'
    notebooks = [p for p in nbs.rglob('*.ipynb') if not any(q.startswith(('.', '_')) for q in p.relative_to(nbs).parts)]
    if len(pages) != len(notebooks): problems.append(f'{len(notebooks)} notebooks but {len(pages)} pages')
    if TUTORIAL not in pages: problems.append(f'no {TUTORIAL} to take a screenshot of')
    srv = serve(site)
    base = f'http://127.0.0.1:{srv.server_port}/'
    links, ids, n_console, n_images, n_math = {}, {}, 0, 0, 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        errors = []
        page.on('console', lambda m: errors.append(f'console {m.type}: {m.text}') if m.type == 'error' else None)
        page.on('pageerror', lambda e: errors.append(f'uncaught exception: {e}'))
        # a request the next navigation cancels (the search index worker) is not a failure
        page.on('requestfailed', lambda r: r.failure == 'net::ERR_ABORTED' or errors.append(
            f'request failed: {r.url} ({r.failure})'))
        for rel in pages:
            errors.clear()
            resp = page.goto(base + rel, wait_until='load')
            page.wait_for_timeout(50)
            if resp is None or resp.status != 200: problems.append(f'{rel}: HTTP {resp and resp.status}')
            n_console += sum(e.startswith('console') for e in errors)
            problems += [f'{rel}: {e}' for e in errors]
            n_images += page.evaluate('() => document.images.length')
            problems += [f'{rel}: image did not load: {s}' for s in page.evaluate(BROKEN_IMAGES_JS)]
            n_math += page.evaluate("() => document.querySelectorAll('article math').length")
            ids[rel] = set(page.evaluate(IDS_JS))
            for href in page.evaluate(LINKS_JS):
                if href.startswith(base): links.setdefault(href, rel)
            if rel in ('index.html', TUTORIAL):
                shots = site / 'screenshots'
                shots.mkdir(exist_ok=True)
                page.screenshot(path=str(shots / (Path(rel).stem + '.png')), full_page=rel == TUTORIAL)
            code = page.evaluate(CODE_TEXT_JS)
            for what, pat in CODE_CHECKS:
                problems += [f'{rel}: {what}: {m.group(0)[:80]!r}' for m in pat.finditer(code)]
            text = page.evaluate(VISIBLE_TEXT_JS)
            for what, pat in TEXT_CHECKS:
                problems += [f'{rel}: {what}: {m.group(0)[:80]!r}' for m in pat.finditer(text)]
        errors.clear()
        n_hits = search_hits(page, base)
        if not n_hits: problems.append(f'the search box finds nothing for {SEARCH!r}')
        problems += [f'search: {e}' for e in errors]
        browser.close()
    srv.shutdown()
    for href, src in sorted(links.items()):
        url, frag = urldefrag(href)
        path = unquote(urlparse(url).path).lstrip('/') or 'index.html'
        if path.endswith('/'): path += 'index.html'
        if not (site / path).is_file(): problems.append(f'{src}: broken link {href}')
        elif frag and path in ids and unquote(frag) not in ids[path]: problems.append(f'{src}: missing anchor {href}')
    print(f'pages loaded: {len(pages)}, internal links checked: {len(links)}, console errors: {n_console}, '
          f'images: {n_images}, math elements: {n_math}, search hits for {SEARCH!r}: {n_hits}, '
          f'problems: {len(problems)} ({time.time() - t0:.0f}s)')
    print('screenshots:', ', '.join(str(p) for p in sorted((site / 'screenshots').glob('*.png'))))
    for p in problems[:100]: print('FAIL', p)
    return 1 if problems or not pages else 0


if __name__ == '__main__':
    sys.exit(check())
