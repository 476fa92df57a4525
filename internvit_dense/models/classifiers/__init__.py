from .linear_probe import LinearProbeClassifier, LinearProbeHead, block_tokens, count_trainable, probe_feature

__all__ = ['LinearProbeClassifier', 'LinearProbeHead', 'block_tokens', 'count_trainable', 'probe_feature']
