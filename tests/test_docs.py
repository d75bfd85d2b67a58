"""The documentation: README.md stays short, and every relative link and anchor in it resolves.

Checks README.md, every ``docs/**/*.md`` and ``benchmarks/README.md``: each relative link
``[text](path)``, ``[text](path#anchor)``, ``[text](#anchor)`` (images and reference definitions
included) names a file or folder that exists relative to the linking file, and its anchor is a
heading of the target markdown file under GitHub's slug rules (or an explicit ``<a id=...>``).
Links in code spans and fenced code blocks are not links and are skipped, as are URLs with a
scheme (``https:``, ``mailto:``, ``gs:``). Pure Python: no jaxdisp import.
"""

import glob
import os
import re
import urllib.parse

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 150

_FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})')
_CODE_SPAN = re.compile(r'(`+)(?!`)(.+?)(?<!`)\1(?!`)')
_HEADING = re.compile(r'^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$')
_INLINE_LINK = re.compile(r'\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)'
                          r'(?:\s+(?:"[^"]*"|\'[^\']*\'|\([^)]*\)))?\s*\)')
_REFERENCE_DEF = re.compile(r'^ {0,3}\[([^\]]+)\]:\s*(<[^>]*>|\S+)')
_HTML_ANCHOR = re.compile(r'<a\s[^>]*?\b(?:id|name)\s*=\s*["\']([^"\']+)["\']', re.IGNORECASE)
_SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')


def doc_files() -> list:
  """Every markdown file the check covers, as repository-relative paths."""
  files = ['README.md', os.path.join('benchmarks', 'README.md')]
  files += sorted(os.path.relpath(p, REPO) for p in
                  glob.glob(os.path.join(REPO, 'docs', '**', '*.md'), recursive=True))
  return [f for f in files if os.path.isfile(os.path.join(REPO, f))]


def closes(line: str, fence: str) -> bool:
  """Whether ``line`` closes a fenced code block opened by ``fence``."""
  return re.match(r'^ {0,3}' + re.escape(fence[0]) + '{' + str(len(fence)) + r',}[ \t]*$',
                  line) is not None


def prose_lines(text: str) -> list:
  """(line number, line) outside fenced code blocks, with code spans blanked out."""
  out, fence = [], None
  for number, line in enumerate(text.splitlines(), 1):
    match = _FENCE.match(line)
    if fence is None and match:
      fence = match.group(1)
      continue
    if fence is not None:
      if closes(line, fence):
        fence = None
      continue
    out.append((number, _CODE_SPAN.sub(lambda m: 'code', line)))
  return out


def slug(heading: str) -> str:
  """GitHub's anchor for a heading's text (before de-duplication).

  The rendered text (links reduced to their text, code-span backticks and emphasis markers
  dropped), lowercased; every character that is not a letter, digit, space, '-' or '_' removed;
  each space replaced by '-'.
  """
  text = re.sub(r'!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)', r'\1', heading)  # links -> text
  text = re.sub(r'<[^>]+>', '', text)  # inline HTML tags
  text = text.strip().lower()
  text = re.sub(r'[^\w\- ]', '', text)
  return text.replace(' ', '-')


def anchors(path: str) -> set:
  """Every anchor of a markdown file: its headings' slugs (duplicates get -1, -2, ...) and ids."""
  with open(path, encoding='utf-8') as f:
    text = f.read()
  found, seen = set(), {}
  fence = None
  for line in text.splitlines():
    match = _FENCE.match(line)
    if fence is None and match:
      fence = match.group(1)
      continue
    if fence is not None:
      if closes(line, fence):
        fence = None
      continue
    found.update(_HTML_ANCHOR.findall(line))
    heading = _HEADING.match(line)
    if heading:
      base = slug(heading.group(2) or '')
      count = seen.get(base, 0)
      seen[base] = count + 1
      found.add(base if count == 0 else f'{base}-{count}')
  return found


def links(text: str) -> list:
  """(line number, target) of every link in the prose of a markdown text."""
  out = []
  for number, line in prose_lines(text):
    for match in _INLINE_LINK.finditer(line):
      out.append((number, match.group(2)))
    definition = _REFERENCE_DEF.match(line)
    if definition:
      out.append((number, definition.group(2)))
  return out


def broken_links(relpath: str, repo: str = REPO) -> list:
  """A line per relative link of ``relpath`` (relative to ``repo``) that does not resolve."""
  source = os.path.join(repo, relpath)
  with open(source, encoding='utf-8') as f:
    text = f.read()
  problems = []
  for number, target in links(text):
    target = target.strip('<>')
    if not target or _SCHEME.match(target):
      continue
    path, _, anchor = target.partition('#')
    path = urllib.parse.unquote(path)
    if not path:
      resolved = source
    elif path.startswith('/'):
      resolved = os.path.join(repo, path.lstrip('/'))
    else:
      resolved = os.path.normpath(os.path.join(os.path.dirname(source), path))
    where = f'{relpath}:{number}: ({target})'
    if not os.path.exists(resolved):
      problems.append(f'{where} {os.path.relpath(resolved, repo)} does not exist')
    elif anchor and resolved.endswith('.md'):
      anchor = urllib.parse.unquote(anchor)
      if anchor not in anchors(resolved):
        problems.append(f'{where} no heading or id {anchor!r} in {os.path.relpath(resolved, repo)}')
  return problems


@pytest.mark.parametrize('heading, expected', [
    ('Several processes (multi-host)', 'several-processes-multi-host'),
    ('Speed, and what it is compared with', 'speed-and-what-it-is-compared-with'),
    ('Labels from people: the files oracle', 'labels-from-people-the-files-oracle'),
    ('On a GPU or TPU: `accelerator_check.py`', 'on-a-gpu-or-tpu-accelerator_checkpy'),
    ('Comparing strategies: `jaxdisp.sweep` and `jaxdisp.report`',
     'comparing-strategies-jaxdispsweep-and-jaxdispreport'),
    ('What happens when ...', 'what-happens-when-'),
    ('Crashes, preemption, restarts', 'crashes-preemption-restarts'),
    ('[Deep](x.md) ensembles', 'deep-ensembles'),
    ('Déjà vu → 100%', 'déjà-vu--100'),
])
def test_slug_follows_github(heading, expected):
  assert slug(heading) == expected


def test_anchors_number_duplicate_headings_and_skip_code(tmp_path):
  page = tmp_path / 'page.md'
  page.write_text('# Intro\n\n## Options\n\n```\n# Not a heading\n```\n\n### Options\n'
                  '    # indented code, not a heading\n<a id="vaal"></a>**VAAL**\n## Options ##\n',
                  encoding='utf-8')
  assert anchors(str(page)) == {'intro', 'options', 'options-1', 'options-2', 'vaal'}


def test_links_skip_code_and_find_every_form():
  text = ('See [a](a.md#x), ![img](p.png "title") and [`b/`](b/README.md).\n'
          'Not `[c](c.md)`; [web](https://example.com), [here](#local).\n'
          '```\n[d](d.md)\n```\n[ref]: e.md#y\n')
  assert [t for _, t in links(text)] == [
      'a.md#x', 'p.png', 'b/README.md', 'https://example.com', '#local', 'e.md#y']


def test_broken_links_are_reported(tmp_path):
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'a.md').write_text('# Title\n', encoding='utf-8')
  (tmp_path / 'README.md').write_text(
      '[ok](docs/a.md#title) [dir](docs/) [self](#top)\n# Top\n'
      '[gone](docs/b.md) [bad anchor](docs/a.md#nope)\n', encoding='utf-8')
  problems = broken_links('README.md', str(tmp_path))
  assert len(problems) == 2, problems
  assert 'README.md:3: (docs/b.md) docs/b.md does not exist' in problems[0]
  assert "no heading or id 'nope' in docs/a.md" in problems[1]


def test_readme_is_at_most_150_lines():
  with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    lines = f.read().splitlines()
  assert len(lines) <= README_MAX_LINES, f'README.md has {len(lines)} lines'


def test_readme_keeps_the_ci_test_command():
  """``.ci/run`` runs the first README line matching this pattern as the CI test command."""
  with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  match = re.search(r"pip install -e '\.\[test\]' .*", text)
  assert match and match.group(0) == "pip install -e '.[test]' && python -m pytest -q"


def test_docs_pages_exist():
  pages = {os.path.basename(f) for f in doc_files() if f.startswith('docs' + os.sep)}
  for page in ('README.md', 'configuration.md', 'strategies.md', 'adding-a-strategy.md',
               'human-oracle.md', 'reliability.md', 'design.md', 'multi-host.md', 'testing.md',
               'results.md', 'outputs.md', 'speed.md'):
    assert page in pages, page


@pytest.mark.parametrize('relpath', doc_files())
def test_relative_links_and_anchors_resolve(relpath):
  problems = broken_links(relpath)
  assert not problems, '\n'.join(problems)
