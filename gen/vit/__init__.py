"""The all-integer ViT, generator side (docs/vit.md, issue 10).

* :mod:`gen.vit.model`: :class:`~gen.vit.model.IntViT`, the whole tiny ViT in integers (INT8
  embedding, integer LayerNorm, scale-aligned residual adds, sparse attention, a 256-entry
  activation table, INT8 classifier), its exported dict (docs/vit.md section 2), its integer
  reference and its file; :func:`~gen.vit.model.prepared_int_vit` is the one-call entry.

The integer functions themselves live in :mod:`gen.numeric` (docs/vit.md section 1).
"""

__all__ = ["prepared_int_vit", "digits_pixels"]


def prepared_int_vit(*args, **kwargs):
    """:func:`gen.vit.model.prepared_int_vit` (imported on use: torch is slow to import)."""
    from .model import prepared_int_vit as impl
    return impl(*args, **kwargs)


def digits_pixels(*args, **kwargs):
    """:func:`gen.vit.model.digits_pixels`."""
    from .model import digits_pixels as impl
    return impl(*args, **kwargs)
