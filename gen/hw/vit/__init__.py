"""The ViT accelerator's row units and reuse engines (docs/vit.md).

* :mod:`.layernorm`: integer LayerNorm (docs/vit.md section 1.1);
* :mod:`.residual`: residual add with scale alignment (section 1.2);
* :mod:`.activation`: the activation table (section 1.3);
* :mod:`.argmax`: the classifier's first-maximum index.
"""
