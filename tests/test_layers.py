"""The package's layers point one way: read from every module's import statements (those inside functions too),
so that a lazy import cannot hide an edge. The rules are the project's (README, Development):

- tools and benchmarks import the package, never the other way;
- the models read checkpoints, the checkpoint layer never imports a model (nor anything above it);
- the engine never imports the memory plan or the tasks above it;
- a checkpoint format registers itself in the table, and the table imports no format.
"""
import ast
import os
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PACKAGE = 'internvit_dense'
# what lies above the engine: the memory plan and the task layers built on the engine
ABOVE_ENGINE = ('memory_plan', 'linear_probe', 'apis', 'inference')
# everything but the checkpoint layer itself and the standard library / third-party packages
ABOVE_CHECKPOINT = ('models', 'engine', 'datasets', 'memory_plan', 'linear_probe', 'apis', 'inference')


def module_name(path: str, root: str = ROOT) -> str:
    rel = osp.relpath(path, root)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def imports_of(path: str, root: str = ROOT):
    """(line, imported module) for every import in the file; ``from a import b`` also yields ``a.b``, which
    is the module ``a.b`` where ``b`` is one."""
    name = module_name(path, root)
    package = name if path.endswith('__init__.py') else name.rsplit('.', 1)[0]
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f'{base}.{alias.name}'


def package_modules():
    for folder, _, files in os.walk(osp.join(ROOT, PACKAGE)):
        for file in sorted(files):
            if file.endswith('.py'):
                yield osp.join(folder, file)


def layer_of(module: str) -> str:
    """``internvit_dense.engine.training`` -> ``engine``; '' outside the package."""
    parts = module.split('.')
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else ''


def edges():
    for path in package_modules():
        for line, target in imports_of(path):
            yield f'{osp.relpath(path, ROOT)}:{line}', module_name(path), target


def test_the_reader_sees_lazy_and_relative_imports(tmp_path):
    # the reader itself, on a file it must not miss anything of
    pkg = tmp_path / 'internvit_dense' / 'engine'
    pkg.mkdir(parents=True)
    (pkg / 'x.py').write_text('def f():\n    from ..memory_plan import plan\n    import tools.train\n')
    found = {t for _, t in imports_of(str(pkg / 'x.py'), root=str(tmp_path))}
    assert {'internvit_dense.memory_plan', 'internvit_dense.memory_plan.plan', 'tools.train'} <= found


def test_the_package_never_imports_tools_or_benchmarks():
    wrong = [f'{where} imports {t}' for where, _, t in edges() if t.split('.')[0] in ('tools', 'benchmarks')]
    assert not wrong, wrong


def test_the_checkpoint_layer_imports_no_model_and_nothing_above_it():
    wrong = [f'{where} imports {t}' for where, src, t in edges()
             if layer_of(src) == 'checkpoint' and layer_of(t) in ABOVE_CHECKPOINT]
    assert not wrong, wrong


@pytest.mark.parametrize('layer', ['engine', 'models', 'datasets'])
def test_lower_layers_never_import_the_memory_plan_or_the_tasks_above_the_engine(layer):
    wrong = [f'{where} imports {t}' for where, src, t in edges()
             if layer_of(src) == layer and layer_of(t) in ABOVE_ENGINE]
    assert not wrong, wrong


def test_the_format_table_imports_no_format_and_every_format_is_in_it():
    import inspect

    from internvit_dense import checkpoint
    from internvit_dense.checkpoint.formats import FORMATS, CheckpointFormat

    table = osp.join(ROOT, PACKAGE, 'checkpoint', 'formats.py')
    imported = [t for _, t in imports_of(table) if t.startswith(f'{PACKAGE}.checkpoint')]
    assert not imported, f'the table (checkpoint/formats.py) imports {imported}'
    # every concrete format defined in the checkpoint package registered itself, once
    defined = set()
    for path in package_modules():
        if layer_of(module_name(path)) != 'checkpoint':
            continue
        module = __import__(module_name(path), fromlist=['_'])
        defined |= {cls for _, cls in inspect.getmembers(module, inspect.isclass)
                    if issubclass(cls, CheckpointFormat) and cls.__module__ == module.__name__ and cls.name}
    assert defined, 'no checkpoint format found'
    assert {type(f) for f in FORMATS.values()} == defined
    assert checkpoint.FORMATS is FORMATS


def test_register_format_refuses_a_second_name_and_a_format_without_marker():
    from internvit_dense.checkpoint.formats import FORMATS, CheckpointFormat, register_format

    class Again(CheckpointFormat):
        name, marker = next(iter(FORMATS)), 'x.y'

    class NoMarker(CheckpointFormat):
        name = 'no-marker'

    before = dict(FORMATS)
    with pytest.raises(ValueError, match='two checkpoint formats are named'):
        register_format(Again)
    with pytest.raises(ValueError, match='needs a name and a marker'):
        register_format(NoMarker)
    assert FORMATS == before


def test_a_marker_that_ends_in_another_is_tried_first():
    from internvit_dense.checkpoint.formats import in_detection_order

    for whole_model in (False, True):
        order = [f.marker for f in in_detection_order(whole_model)]
        for i, marker in enumerate(order):
            later = [m for m in order[i + 1:] if m.endswith('.' + marker)]
            assert not later, f'{later} end in {marker!r} but are tried after it'
