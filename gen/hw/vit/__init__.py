"""The ViT accelerator (docs/vit.md): row units, reuse engines, the two-engine core.

* :mod:`.layernorm`: integer LayerNorm (docs/vit.md section 1.1);
* :mod:`.residual`: residual add with scale alignment (section 1.2);
* :mod:`.activation`: an activation table as a stream unit (section 1.3; the engines' kernels
  hold their tables in the result writer, ``AttentionGeometry.activation_tables``);
* :mod:`.argmax`: the classifier's first-maximum index;
* :mod:`.rows`: row movers between a kernel's activation memory and streams;
* :mod:`.engine`: :class:`~.engine.ViTEngine`, one reuse engine (NSA or NMP) and its program;
* :mod:`.system`: :class:`~.system.ViTCore`, the two engines in a ring of stream FIFOs;
* :mod:`.layout`: :class:`~.layout.ViTDesign` (sizes, geometries, the deadlock rule) and
  :func:`~.layout.model_image` (a model's load beats and programs).
"""
