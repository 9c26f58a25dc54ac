"""ncutils: the small, tested library behind the neural-collapse book.

One job per module: ``config`` (presets, config hash), ``data`` (datasets as tensors),
``models`` (networks exposing penultimate features), ``etf`` (simplex ETFs), ``metrics``
(NC1-NC4), ``train`` (training loop), ``ufm`` (unconstrained features model), ``seg``
(segmentation), ``ood`` / ``ood_model`` / ``ood_train`` (layer-wise collapse, OOD
detection and transfer), ``store`` (results with provenance), ``plotting`` (figures).
"""

__version__ = "0.1.0"
