"""Commands in the documentation cannot rot.

Every fenced shell block (```bash / ```sh / ```shell) of README.md and docs/*.md is read. Each invocation of a
tools/ script in it must name a script that exists and configs that exist, and its arguments must be accepted by
that script's own argument parser (the tool's ``main`` runs up to its ``parse_args`` and stops there). Each block
that invokes a tool says on its first line why a reader can trust it:

    # tested: tests/test_seg_e2e.py::test_upernet_full_learns    (the command, on tiny data, runs in that test)
    # needs: GPUs and ADE20K                                     (it cannot run here: what it needs)

Each ``tested:`` test must exist and one of them run each tool the block runs; a ``needs:`` line must name a GPU,
real data or released weights. Synopsis notation is read as a reader reads it: ``[--flag VALUE]`` is the flag
given, ``{a,b}`` the first choice, ``...`` is left out; UPPER-CASE words (CONFIG, CHECKPOINT) are placeholders.
"""
import argparse
import ast
import glob
import os
import re
import shlex

import pytest
from conftest import ROOT, load_tool

FENCE = re.compile(r'^```(\w*)[^\n]*\n(.*?)^```', re.M | re.S)
SHELL_LANGS = {'bash', 'sh', 'shell'}
TOOL = re.compile(r'(?:^|/)tools/([\w-]+)\.(py|sh)$')
# the launchers, as the tool and arguments they pass on: (tool, number of leading arguments they take, which of
# those they pass on in front of the rest)
LAUNCHERS = {'dist_train': ('train', 2, [0]), 'dist_test': ('test', 3, [0, 1]), 'slurm_train': ('train', 3, [2])}
NEEDS_WORDS = re.compile(r'\b(GPUs?|ADE20K|COCO|ImageNet|weights|checkpoint|data)\b')
PLACEHOLDER = re.compile(r'^[A-Z][A-Z0-9_]*(\.\w+)?$')  # CONFIG, CHECKPOINT, OUT.pth


def doc_files():
    return [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def shell_blocks():
    """(file, line number, text) of every fenced shell block."""
    for path in doc_files():
        text = open(path, encoding='utf-8').read()
        for m in FENCE.finditer(text):
            if m.group(1) in SHELL_LANGS:
                yield os.path.relpath(path, ROOT), text[:m.start()].count('\n') + 2, m.group(2)


def commands(block: str):
    """The commands of a block: continuation lines joined, comments dropped, split at ; && ||."""
    joined = re.sub(r'\\\n', ' ', block)
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        command = []
        for token in tokens + [';']:
            if token in (';', '&&', '||', '|'):
                if command:
                    yield command
                command = []
            else:
                command.append(token)


def synopsis_to_argv(tokens):
    """A synopsis as the arguments a reader would type: brackets dropped, the first of {a,b,c}, no '...'."""
    argv = []
    for token in tokens:
        token = token.lstrip('[').rstrip(']')
        if not token or token == '...':
            continue
        choice = re.fullmatch(r'\{([^{},]+),[^{}]*\}', token)
        argv.append(choice.group(1) if choice else token)
    return argv


def tool_invocations(command):
    """(tool name, its argv) for each tools/ script a command runs; launchers map to the tool they launch."""
    for i, token in enumerate(command):
        m = TOOL.search(token)
        if not m:
            continue
        name, kind = m.groups()
        rest = command[i + 1:]
        if kind == 'sh' and name in LAUNCHERS:
            tool, n_lead, passed = LAUNCHERS[name]
            yield name + '.sh', None
            yield tool + '.py', synopsis_to_argv([rest[j] for j in passed if j < len(rest)] + rest[n_lead:])
        else:
            yield f'{name}.{kind}', (synopsis_to_argv(rest) if kind == 'py' else None)
        return


class _Parsed(Exception):
    pass


def parse_with_the_tools_parser(tool: str, argv, monkeypatch):
    """The tool's main(argv) up to its parse_args: the namespace, or the parser's own error message."""
    real = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise _Parsed(real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', parse_only)
    module = load_tool(tool)
    try:
        module.main(list(argv))
    except _Parsed as parsed:
        return parsed.args[0]
    raise AssertionError(f'tools/{tool}.py main() returned without parsing its arguments')


def test_fence_reader_sees_every_block_and_invocation():
    """The reader itself: a synopsis, a continuation line, a launcher and a comment."""
    block = ('# needs: GPUs\n.venv/bin/python tools/train.py CONFIG [--deepspeed {1,2,3}] \\\n    [--amp]  # note\n'
             'PYTHON=.venv/bin/python tools/dist_test.sh CONFIG CKPT 8 --tta && echo done\n')
    found = [inv for c in commands(block) for inv in tool_invocations(c)]
    assert found == [('train.py', ['CONFIG', '--deepspeed', '1', '--amp']), ('dist_test.sh', None),
                     ('test.py', ['CONFIG', 'CKPT', '--tta'])]


def test_the_tools_parser_refuses_an_unknown_flag(monkeypatch, capsys):
    assert parse_with_the_tools_parser('train', ['CONFIG', '--amp'], monkeypatch).amp
    with pytest.raises(SystemExit):
        parse_with_the_tools_parser('train', ['CONFIG', '--no-such-flag'], monkeypatch)
    assert 'unrecognized arguments: --no-such-flag' in capsys.readouterr().err


def test_blocks_exist():
    blocks = list(shell_blocks())
    assert len(blocks) >= 10
    assert any(f == 'README.md' and 'bash tools/run_demo.sh' in b for f, _, b in blocks)


BLOCKS = list(shell_blocks())


@pytest.mark.parametrize('where,block', [(f'{f}:{n}', b) for f, n, b in BLOCKS], ids=[f'{f}:{n}' for f, n, _ in BLOCKS])
def test_documented_commands_are_runnable(where, block, monkeypatch):
    invocations = [inv for c in commands(block) for inv in tool_invocations(c)]
    for command in commands(block):
        for token in command:  # every config and script a command names exists
            for path in re.findall(r'(?:^|[=\s])((?:configs|tools)/[\w./{},-]+\.(?:py|sh))', ' ' + token):
                if '{' not in path:
                    assert os.path.isfile(os.path.join(ROOT, path)), f'{where}: {path} does not exist'
    for script, argv in invocations:
        assert os.path.isfile(os.path.join(ROOT, 'tools', script)), f'{where}: tools/{script} does not exist'
        if argv is None:
            continue
        tool = script[:-3]
        try:
            args = parse_with_the_tools_parser(tool, argv, monkeypatch)
        except SystemExit as e:
            raise AssertionError(f'{where}: tools/{script} {shlex.join(argv)} is refused by its parser '
                                 f'(exit {e.code}; its message is above)') from None
        config = getattr(args, 'config', None)
        if config and not PLACEHOLDER.match(config):
            assert os.path.isfile(os.path.join(ROOT, config)), f'{where}: config {config} does not exist'

    if not any(script.endswith('.py') for script, _ in invocations):
        return
    first = block.splitlines()[0].strip()
    m = re.fullmatch(r'# (tested|needs): (.+)', first)
    assert m, (f'{where}: a block that runs tools/ starts with "# tested: tests/FILE.py::TEST" (it runs in the '
               f'tests) or "# needs: WHAT" (a GPU, real data, released weights); it starts with {first!r}')
    if m.group(1) == 'needs':
        assert NEEDS_WORDS.search(m.group(2)), f'{where}: "# needs:" names no GPU, data or weights: {first!r}'
        return
    sources = {}
    for ref in re.split(r',\s*', m.group(2)):
        path, _, name = ref.partition('::')
        file = os.path.join(ROOT, path)
        assert os.path.isfile(file), f'{where}: {path} does not exist'
        sources[ref] = open(file, encoding='utf-8').read()
        names = {n.name for n in ast.walk(ast.parse(sources[ref])) if isinstance(n, ast.FunctionDef)}
        assert name in names, f'{where}: {path} has no test {name}'
    for tool in {script[:-3] for script, argv in invocations if argv is not None}:
        assert any(f"'{tool}.py'" in s or f"load_tool('{tool}')" in s for s in sources.values()), \
            f'{where}: none of {", ".join(sources)} runs tools/{tool}.py, which the block runs'
