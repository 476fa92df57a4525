"""Linear-probe benchmark: feature cache, one-pass grid sweep, variant scoring.

``tools/linear_probe.py`` is the command-line front end (extract / sweep / eval);
``configs/classification/`` runs the single-classifier recipe through the mmengine runner.
"""
from .cache import CacheError, FeatureCache, SplitFeatures, checkpoint_identity
from .grid import DEFAULT_LRS, RECIPE_SPEC, FeatureSpec, LinearGrid, ProbeClassifier, train_grid
from .scoring import Score, score
from internvit_dense.datasets.imagenet import VARIANTS, Variant

__all__ = ['CacheError', 'FeatureCache', 'SplitFeatures', 'checkpoint_identity', 'DEFAULT_LRS', 'RECIPE_SPEC',
           'FeatureSpec', 'LinearGrid', 'ProbeClassifier', 'train_grid', 'Score', 'score',
           'VARIANTS', 'Variant']
