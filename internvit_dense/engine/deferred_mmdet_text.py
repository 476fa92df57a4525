"""mmdet's models and data transforms without transformers at a tool's start.

mmseg's model package imports all of mmdet's (``mmseg/models/decode_heads/mask2former_head.py``), and four mmdet
modules import transformers as they load, for GLIP and Grounding DINO's text side: 3 of the ~10 seconds a tool spent
starting on a 2-core machine (transformers 5 brings its modelling code and ``torch._dynamo``). Through
:func:`defer_transformers_in_mmdet` they load with transformers hidden, and each name they would have taken from
transformers is bound to a stand-in that imports it on first use, so a config that builds mmdet's ``BertModel``,
``RandomSamplingNegPos`` or ``ATSSVLFusionHead`` gets transformers' real classes as before.

``mmdet/models/utils/vlfuse_helper.py`` is the exception, and the reason this needs transformers 5: it imports
``apply_chunking_to_forward`` from ``transformers.modeling_utils``, which transformers 5 no longer has, so under
transformers 5 its ``except ImportError`` branch binds its fallbacks (``object`` and ``None``) whatever we do; hidden,
it binds the same ones. With transformers 4 that import works, so nothing is deferred there.
"""
import importlib.abc
import importlib.machinery
import importlib.metadata
import sys

# module -> {its name: transformers' name}: the names each binds from transformers at import
TEXT_NAMES = {
    'mmdet.models.language_models.bert': {'AutoTokenizer': 'AutoTokenizer', 'BertConfig': 'BertConfig',
                                          'HFBertModel': 'BertModel'},
    'mmdet.models.dense_heads.atss_vlfusion_head': {'BertConfig': 'BertConfig'},
    'mmdet.datasets.transforms.text_transformers': {'AutoTokenizer': 'AutoTokenizer', 'HFBertModel': 'BertModel'},
    'mmdet.models.utils.vlfuse_helper': {},  # its fallbacks, as with transformers 5 (module docstring)
}


class FromTransformers:
    """``transformers.<name>``, imported at its first use (an attribute, or a call)."""

    def __init__(self, name: str):
        self._name = name

    def resolve(self):
        import transformers
        return getattr(transformers, self._name)

    def __getattr__(self, attr):
        return getattr(self.resolve(), attr)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __repr__(self):
        return f'<transformers.{self._name}, imported on first use>'


class _WithoutTransformers(importlib.abc.Loader):
    """Runs a module's code with ``import transformers`` failing, then binds its stand-ins."""

    def __init__(self, loader, names):
        self.loader, self.names = loader, names

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        if 'transformers' in sys.modules:  # loaded meanwhile: nothing left to save
            return self.loader.exec_module(module)
        sys.modules['transformers'] = None  # `from transformers import ...` raises ImportError, which mmdet catches
        try:
            self.loader.exec_module(module)
        finally:
            if sys.modules.get('transformers', 0) is None:
                del sys.modules['transformers']
        for name, source in self.names.items():
            setattr(module, name, FromTransformers(source))


class _DeferTransformersFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in TEXT_NAMES or 'transformers' in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutTransformers(spec.loader, TEXT_NAMES[fullname])
        return spec


def defer_transformers_in_mmdet() -> bool:
    """Installs the import hook; must run before mmdet's models load (``internvit_dense.engine`` calls it first
    thing). A no-op when any of those modules or transformers are loaded already, or transformers is not
    installed or older than 5. Returns whether it installed the hook."""
    if 'transformers' in sys.modules or any(name in sys.modules for name in TEXT_NAMES):
        return False
    if any(isinstance(finder, _DeferTransformersFinder) for finder in sys.meta_path):
        return True
    try:
        major = int(importlib.metadata.version('transformers').split('.')[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    if major < 5:
        return False
    sys.meta_path.insert(0, _DeferTransformersFinder())
    return True
