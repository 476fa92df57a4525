"""mmdet's models and data transforms without transformers and scikit-learn at a tool's start.

mmseg's model package imports all of mmdet's (``mmseg/models/decode_heads/mask2former_head.py``), and five mmdet
modules import optional packages as they load: four import transformers, for GLIP and Grounding DINO's text side,
and the tracking interpolation imports scikit-learn's Gaussian processes. On a 2-core machine that was 3 s
(transformers 5 brings its modelling code and ``torch._dynamo``) and 1.3 s of the ~10 s a tool spent starting.
Through :func:`defer_optional_imports_in_mmdet` they load with that package hidden, and each name they would have
taken from it is bound to a stand-in that imports it on first use, so a config that builds mmdet's ``BertModel``,
``RandomSamplingNegPos``, ``ATSSVLFusionHead`` or ``InterpolateTracklets`` gets the real classes as before.

``mmdet/models/utils/vlfuse_helper.py`` is the exception, and the reason the transformers part needs transformers 5:
it imports ``apply_chunking_to_forward`` from ``transformers.modeling_utils``, which transformers 5 no longer has, so
under transformers 5 its ``except ImportError`` branch binds its fallbacks (``object`` and ``None``) whatever we do;
hidden, it binds the same ones. With transformers 4 that import works, so transformers is not deferred there.
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import sys
from typing import Optional

TRANSFORMERS_NAMES = {  # module -> {its name: transformers' name}
    'mmdet.models.language_models.bert': {'AutoTokenizer': 'AutoTokenizer', 'BertConfig': 'BertConfig',
                                          'HFBertModel': 'BertModel'},
    'mmdet.models.dense_heads.atss_vlfusion_head': {'BertConfig': 'BertConfig'},
    'mmdet.datasets.transforms.text_transformers': {'AutoTokenizer': 'AutoTokenizer', 'HFBertModel': 'BertModel'},
    'mmdet.models.utils.vlfuse_helper': {},  # its fallbacks, as with transformers 5 (module docstring)
}
SKLEARN_NAMES = {  # module -> {its name: (module, name or None for the module)}, and the flag it sets on success
    'mmdet.models.task_modules.tracking.interpolation': {
        'GPR': ('sklearn.gaussian_process', 'GaussianProcessRegressor'),
        'RBF': ('sklearn.gaussian_process.kernels', 'RBF'), 'HAS_SKIKIT_LEARN': True},
    'mmdet.models.dense_heads.paa_head': {'skm': ('sklearn.mixture', None)},
}


class Deferred:
    """``<module>.<name>`` (or the module, for no name), imported at its first use (an attribute, or a call)."""

    def __init__(self, module: str, name: Optional[str]):
        self._module, self._name = module, name

    def resolve(self):
        module = importlib.import_module(self._module)
        return module if self._name is None else getattr(module, self._name)

    def __getattr__(self, attr):
        if attr.startswith('_'):
            raise AttributeError(attr)
        return getattr(self.resolve(), attr)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __repr__(self):
        return f"<{self._module}{'' if self._name is None else '.' + self._name}, imported on first use>"


class _WithoutPackage(importlib.abc.Loader):
    """Runs a module's code with ``import <package>`` failing, then binds what it would have imported."""

    def __init__(self, loader, package, names):
        self.loader, self.package, self.names = loader, package, names

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        if self.package in sys.modules:  # loaded meanwhile: nothing left to save
            return self.loader.exec_module(module)
        sys.modules[self.package] = None  # `from <package> import ...` raises ImportError, which mmdet catches
        try:
            self.loader.exec_module(module)
        finally:
            if sys.modules.get(self.package, 0) is None:
                del sys.modules[self.package]
        for name, source in self.names.items():
            setattr(module, name, Deferred(*source) if isinstance(source, tuple) else source)


class _DeferringFinder(importlib.abc.MetaPathFinder):
    def __init__(self, deferred):
        self.deferred = deferred  # module -> (package hidden, names to bind)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.deferred or self.deferred[fullname][0] in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutPackage(spec.loader, *self.deferred[fullname])
        return spec


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def defer_optional_imports_in_mmdet() -> bool:
    """Installs the import hook; must run before mmdet's models load (``internvit_dense.engine`` calls it first
    thing). Defers nothing for a package that is loaded already or not installed (mmdet's own fallbacks then
    apply, as without the hook), nor transformers older than 5, nor a module loaded already. Returns whether it
    installed the hook."""
    if any(isinstance(finder, _DeferringFinder) for finder in sys.meta_path):
        return True
    deferred = {}
    if 'transformers' not in sys.modules and _installed('transformers'):
        try:
            major = int(importlib.metadata.version('transformers').split('.')[0])
        except (importlib.metadata.PackageNotFoundError, ValueError):
            major = 0
        if major >= 5:
            deferred.update({module: ('transformers', {name: ('transformers', source) for name, source in
                                                       names.items()}) for module, names in TRANSFORMERS_NAMES.items()})
    if 'sklearn' not in sys.modules and _installed('sklearn'):
        deferred.update({module: ('sklearn', names) for module, names in SKLEARN_NAMES.items()})
    deferred = {module: spec for module, spec in deferred.items() if module not in sys.modules}
    if not deferred:
        return False
    sys.meta_path.insert(0, _DeferringFinder(deferred))
    return True
