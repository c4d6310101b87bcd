"""Row-wise and memory-footprint-aware column pruning (Zhang et al., TECS 2021; spec section 2).

Stages, each on every encoder matrix (q, k, v, o, fc1, fc2 of both layers):

1. **Row significance.** Every :class:`~gen.sparse.vit.MaskedLinear` carries a per-input-feature
   gain ``gamma`` (the gamma of the LayerNorm the paper inserts before each weight matrix; we keep
   only its diagonal scale because the normalisation itself would not fold into W). Fine-tune with
   an L1 penalty ``l1 * sum |gamma|`` (AdamW's weight decay on W stops W from simply growing to
   cancel a shrinking gamma), then freeze gamma.
2. **Row pruning.** Prune, in every matrix, the fraction ``r`` of rows (input features) with the
   smallest |gamma|. ``r`` is searched (below). Then the gammas are folded into the weights,
   ``W[k, :] *= gamma[k]; gamma[k] = 1`` (exact, since ``(x * g) @ W == x @ (diag(g) W)``), so
   inference needs no extra op.
3. **Q/K feature pruning.** Per head, the features f with the smallest
   ``||Wq[:, f], bq[f]|| * ||Wk[:, f], bk[f]||`` are pruned in both Wq and Wk (same set, columns
   and biases forced to 0), so ``Q[:, f] = K[:, f] = 0`` and the kernel skips them in Q*K^T
   (``kept_features``). The fraction per head is searched.
4. **Word (row, column-block) pruning.** A word is the B weights of one row in one column block
   (spec section 2/3); its significance is its L2 norm. In every matrix the fraction ``r`` of the
   words still present with the smallest norm is pruned. ``r`` is searched.

The search: start at ``r = step``; after each trial (apply masks, fine-tune a few epochs with the
masks, measure validation accuracy) the ratio grows by ``step`` while validation accuracy stays
``>= float_val - tolerance`` and otherwise backs off to the last accepted state with ``step``
halved, until ``step < min_step``; a ratio at or above one that already failed is not tried
again, and a ratio that rounds to the accepted pattern is taken without a trial. Validation
accuracy steers; the test set is only reported. A last short fine-tuning (``final_epochs``) is
kept only if it does not lower validation accuracy. Finally pruned weights and biases are set to
exact zeros in the state, so the state itself is the pruned model.
"""

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .vit import (HEAD_DIM, HEADS, TOKENS, TinyViT, evaluate, load_cached_state,
                  load_digits_split, load_or_train, save_cached_state, setup_torch, state_sha256,
                  train)

__all__ = ["PruneSettings", "PruneResult", "prune", "load_or_prune", "mask_stats",
           "kept_features"]

#: Part of the pruned-model cache key: bump when the algorithm changes.
PRUNE_VERSION = 2


@dataclass(frozen=True)
class PruneSettings:
    """Knobs of the pruning run; :meth:`for_mode` gives the full and the quick (test) settings."""

    block: int = 8
    tolerance: float = 1.0          # accuracy points below the float model's validation accuracy
    l1: float = 1e-3                # weight of the L1 penalty on gamma
    l1_epochs: int = 10
    trial_epochs: int = 6           # per search trial (3 measured worse: 55 % vs 59 % MACs)
    final_epochs: int = 4
    step: float = 0.125
    min_step: float = 1 / 32
    max_ratio: float = 0.9375
    lr: float = 5e-4

    @classmethod
    def for_mode(cls, quick=False, block=8, tolerance=1.0):
        if quick:
            return cls(block=block, tolerance=tolerance, l1_epochs=2, trial_epochs=1,
                       final_epochs=0, step=0.25, min_step=0.25)
        return cls(block=block, tolerance=tolerance)

    def __post_init__(self):
        if not (isinstance(self.block, int) and self.block >= 1):
            raise UserError(f"--block must be a positive integer, got {self.block}")
        if not self.tolerance >= 0:
            raise UserError(f"--tolerance must be >= 0 accuracy points, got {self.tolerance}")


@dataclass
class PruneResult:
    """The pruned float model (gammas folded, masks applied) and what the search measured.

    ``accuracy``: ``{"float"|"rows"|"columns": {"val": %, "test": %}}``; ``history``: one dict per
    search trial (stage, ratio, val accuracy, accepted, sparsity, footprint); ``ratios``: the
    accepted ratio per stage.
    """

    model: TinyViT
    settings: PruneSettings
    accuracy: dict
    history: list = field(default_factory=list)
    ratios: dict = field(default_factory=dict)
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)


def _words_mask(mask, block):
    """(K, N) element mask -> (K, blocks) bool: does the word hold any kept weight."""
    k, n = mask.shape
    blocks = -(-n // block)
    wide = torch.zeros(k, blocks * block)
    wide[:, :n] = mask
    return wide.view(k, blocks, block).amax(dim=2) > 0


def _expand_words(words, n, block):
    """(K, blocks) -> (K, N) element mask."""
    return words.float().repeat_interleave(block, dim=1)[:, :n]


def kept_features(layer):
    """Per head, the Q/K features not pruned (bias mask 1 in Wq), as int64 arrays."""
    keep = layer.q.bias_mask.bool() | layer.k.bias_mask.bool()
    return [np.flatnonzero(keep[h * HEAD_DIM:(h + 1) * HEAD_DIM].numpy()).astype(np.int64)
            for h in range(HEADS)]


def mask_stats(model, block):
    """Sparsity and footprint of the model's masks, counted as the kernel would run them.

    MACs per encoder layer: linears ``T *`` the columns of every kept word (B, fewer in a last
    block that N does not fill: padding lanes are not counted), scores
    ``T * T * len(kept_features[h])`` per head, context ``T * T * d`` per head; dense the same with
    nothing pruned. Footprint: :meth:`CompressedMatrix.footprint` of the word pattern.
    """
    from .format import CompressedMatrix
    macs = dense_macs = 0
    foot = dense_foot = 0
    t = TOKENS
    for i, layer in enumerate(model.layers):
        for name, lin in layer.matrices().items():
            w = (lin.effective_weight() != 0) & (lin.mask > 0)
            words = _words_mask(w.float(), block)
            k, n = lin.weight.shape
            widths = torch.tensor([min(block, n - c * block) for c in range(words.shape[1])])
            macs += t * int((words.sum(dim=0) * widths).sum())
            dense_macs += t * k * n
            pattern = _expand_words(words, n, block).numpy().astype(np.int8)
            cm = CompressedMatrix.from_dense(pattern, block)
            f = cm.footprint()
            foot += f["total"]
            dense_foot += f["dense"]
        kept = sum(len(f) for f in kept_features(layer))
        macs += t * t * kept + t * t * HEAD_DIM * HEADS
        dense_macs += 2 * t * t * HEAD_DIM * HEADS
    return {"macs": macs, "dense_macs": dense_macs, "sparsity": 1 - macs / dense_macs,
            "footprint": foot, "dense_footprint": dense_foot}


def _prune_rows(model, ratio):
    for _, _, lin in model.masked_linears():
        k = lin.in_features
        count = min(int(math.floor(ratio * k)), k - 1)
        order = torch.argsort(lin.gamma.detach().abs(), stable=True)
        lin.mask[order[:count], :] = 0


def _prune_features(model, ratio):
    count = min(int(math.floor(ratio * HEAD_DIM)), HEAD_DIM - 1)
    for layer in model.layers:
        wq = torch.cat([layer.q.effective_weight(), layer.q.effective_bias()[None]], dim=0)
        wk = torch.cat([layer.k.effective_weight(), layer.k.effective_bias()[None]], dim=0)
        score = wq.norm(dim=0) * wk.norm(dim=0)
        for h in range(HEADS):
            cols = torch.arange(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            already = int((layer.q.bias_mask[cols] == 0).sum())
            s = score[cols].clone()
            s[layer.q.bias_mask[cols] == 0] = -1      # pruned ones stay pruned, counted first
            drop = cols[torch.argsort(s, stable=True)[:max(count, already)]]
            for lin in (layer.q, layer.k):
                lin.mask[:, drop] = 0
                lin.bias_mask[drop] = 0


def _prune_words(model, ratio, block):
    for _, _, lin in model.masked_linears():
        k, n = lin.weight.shape
        w = lin.effective_weight()
        blocks = -(-n // block)
        wide = torch.zeros(k, blocks * block)
        wide[:, :n] = w
        norms = wide.view(k, blocks, block).norm(dim=2)
        present = _words_mask(lin.mask, block)
        total = int(present.sum())
        target = int(math.floor(ratio * total))
        # Pruned words rank first (norm -1) so the pattern only ever shrinks.
        norms = torch.where(present, norms, torch.full_like(norms, -1.0))
        drop = torch.argsort(norms.flatten(), stable=True)[:(k * blocks - total) + target]
        keep = torch.ones(k * blocks)
        keep[drop] = 0
        lin.mask.mul_(_expand_words(keep.view(k, blocks), n, block))


def _search(model, data, stage, apply, settings, reference, seed, history, progress):
    """Grow the ratio while validation holds, back off when it drops (module docstring)."""
    accepted_ratio, accepted = 0.0, copy.deepcopy(model.state_dict())
    step = settings.step
    ratio = step
    failed = math.inf                   # smallest ratio that lost accuracy: never tried again
    trial = 0
    while step >= settings.min_step - 1e-12 and ratio <= settings.max_ratio + 1e-12:
        if ratio >= failed - 1e-12:
            step /= 2
            ratio = accepted_ratio + step
            continue
        model.load_state_dict(accepted)
        apply(model, ratio)
        if all(torch.equal(t, accepted[k]) for k, t in model.state_dict().items()
               if k.endswith("mask")):
            # The ratio rounds to the accepted pattern (e.g. the same number of features).
            accepted_ratio = ratio
            ratio += step
            continue
        if settings.trial_epochs:
            train(model, data, settings.trial_epochs, lr=settings.lr, seed=seed + 1000 + trial)
        trial += 1
        val = evaluate(model, data.val)
        ok = val >= reference - settings.tolerance
        stats = mask_stats(model, settings.block)
        history.append({"stage": stage, "ratio": ratio, "val": val, "accepted": ok,
                        "sparsity": stats["sparsity"], "footprint": stats["footprint"]})
        if progress:
            progress(f"  {stage}: ratio {ratio:.3f} -> val {val:.1f}% "
                     f"({'keep' if ok else 'back off'}), MACs removed {stats['sparsity']:.1%}")
        if ok:
            accepted_ratio, accepted = ratio, copy.deepcopy(model.state_dict())
            ratio += step
        else:
            failed = min(failed, ratio)
            step /= 2
            ratio = accepted_ratio + step
    model.load_state_dict(accepted)
    return accepted_ratio


def prune(model, data, settings, seed=0, progress=None):
    """Stages 1-4 of the module docstring on a copy of ``model``; returns :class:`PruneResult`."""
    setup_torch(seed)
    start = time.monotonic()
    model = copy.deepcopy(model)
    reference = evaluate(model, data.val)
    accuracy = {"float": {"val": reference, "test": evaluate(model, data.test)}}
    history, ratios = [], {}

    if progress:
        progress(f"[prune] L1 on gamma ({settings.l1_epochs} epochs, l1 {settings.l1:g}); "
                 f"float val {reference:.1f}%, tolerance {settings.tolerance:g} points")
    linears = [lin for _, _, lin in model.masked_linears()]
    for lin in linears:
        lin.gamma.requires_grad_(True)
    train(model, data, settings.l1_epochs, lr=settings.lr, seed=seed + 1,
          penalty=lambda m: settings.l1 * sum(lin.gamma.abs().sum() for lin in linears))
    for lin in linears:
        lin.gamma.requires_grad_(False)

    ratios["rows"] = _search(model, data, "rows", _prune_rows, settings, reference, seed,
                             history, progress)
    for lin in linears:
        lin.fold_gamma()
    accuracy["rows"] = {"val": evaluate(model, data.val), "test": evaluate(model, data.test)}
    stats_rows = mask_stats(model, settings.block)

    ratios["qk_features"] = _search(model, data, "qk_features", _prune_features, settings,
                                    reference, seed + 100, history, progress)
    ratios["words"] = _search(model, data, "words",
                              lambda m, r: _prune_words(m, r, settings.block), settings,
                              reference, seed + 200, history, progress)
    if settings.final_epochs:
        before = copy.deepcopy(model.state_dict())
        val_before = evaluate(model, data.val)
        train(model, data, settings.final_epochs, lr=settings.lr / 2, seed=seed + 300)
        if evaluate(model, data.val) < val_before:
            model.load_state_dict(before)
    # Pruned weights become real zeros so that the state itself is the pruned model.
    with torch.no_grad():
        for lin in linears:
            lin.weight.mul_(lin.mask)
            lin.bias.mul_(lin.bias_mask)
    accuracy["columns"] = {"val": evaluate(model, data.val), "test": evaluate(model, data.test)}
    model.eval()
    return PruneResult(model, settings, accuracy, history, ratios,
                       round(time.monotonic() - start, 1),
                       {"rows": stats_rows, "columns": mask_stats(model, settings.block)})


def load_or_prune(seed=0, settings=None, quick=False, cache_dir="rtl_out/models", progress=None,
                  activation="relu", clamp_scores=False):
    """Train or load the float model, then prune it or load the pruned state from ``cache_dir``.

    Returns ``(float_model, float_info, PruneResult)``. The cache key is the seed, the settings
    and the float model's sha256, so a retrained float model is pruned again; ``activation`` and
    ``clamp_scores`` (:func:`~gen.sparse.vit.load_or_train`) join the key when not the defaults.
    """
    settings = settings or PruneSettings.for_mode(quick)
    float_model, info = load_or_train(seed, cache_dir, quick=quick, progress=progress,
                                      activation=activation, clamp_scores=clamp_scores)
    data = load_digits_split(seed)
    key = {"seed": seed, "float": info["sha256"], "version": PRUNE_VERSION,
           "settings": settings.__dict__}
    if activation != "relu":
        key["activation"] = activation
    if clamp_scores:
        key["clamp_scores"] = True
    key = json.dumps(key, sort_keys=True)
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    cache = Path(cache_dir)
    weights, meta = cache / f"vit_pruned_{tag}.pt", cache / f"vit_pruned_{tag}.json"
    cached = load_cached_state(weights, meta, progress, activation, clamp_scores)
    if cached is not None:
        model, m = cached
        try:
            result = PruneResult(model, settings, m["accuracy"], m["history"], m["ratios"],
                                 m["seconds"], m["stats"])
        except KeyError:
            (progress or print)(f"warning: the cached pruned model {meta} lacks fields; "
                                f"rebuilding it")
        else:
            if progress:
                progress(f"[prune] loaded {weights}")
            return float_model, info, result
    result = prune(float_model, data, settings, seed=seed, progress=progress)
    save_cached_state(result.model, {"key": json.loads(key), "sha256": state_sha256(result.model),
                                     "accuracy": result.accuracy, "history": result.history,
                                     "ratios": result.ratios, "seconds": result.seconds,
                                     "stats": result.stats}, weights, meta)
    return float_model, info, result
