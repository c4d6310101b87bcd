"""Sparse INT8 attention, model side (docs/sparse_attention.md sections 1-4).

* :mod:`gen.sparse.vit`: the tiny ViT on 8x8 digits, training, a state cache;
* :mod:`gen.sparse.prune`: row pruning (L1 on inserted gammas) and footprint-aware column-block
  pruning with shared per-head Q/K feature pruning (Zhang et al., TECS 2021);
* :mod:`gen.sparse.quantize`: INT8 per the numeric contract, integer softmax, integer inference,
  and the per-layer export for the hardware (:class:`QuantizedEncoderLayer`);
* :mod:`gen.sparse.format`: :class:`CompressedMatrix` and its ``.npz`` file format;
* :mod:`gen.sparse.cli`: ``python -m gen prune``.

:func:`prepared_model` is the one-call entry for other code (kernel tests, benchmarks).
"""

__all__ = ["prepared_model"]


def prepared_model(seed=0, block=8, quick=True, tolerance=1.0, cache_dir="rtl_out/models",
                   progress=None):
    """Train/load, prune/load (cached in ``cache_dir``) and quantize the tiny ViT.

    Returns a :class:`gen.sparse.quantize.QuantizedViT`: ``.layers`` holds one
    :class:`~gen.sparse.quantize.QuantizedEncoderLayer` per encoder layer and
    ``.layer_io(image, layer)`` gives the INT8 inputs X and X2 of a layer for one digit image.
    The first call with ``quick=True`` takes about 20 s on one core, later calls under a second.
    """
    import torch
    from .prune import PruneSettings, load_or_prune
    from .quantize import quantize_model
    from .vit import load_digits_split
    torch.set_num_threads(1)
    settings = PruneSettings.for_mode(quick, block=block, tolerance=tolerance)
    _, _, result = load_or_prune(seed, settings, quick=quick, cache_dir=cache_dir,
                                 progress=progress)
    return quantize_model(result.model, load_digits_split(seed).train[0], block=block)
