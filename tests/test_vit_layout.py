"""The ViT design's host side without hardware: sizes, the deadlock rule, memory images and the
refusals of a model or an image the design was not generated for (gen.hw.vit.layout)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gen.errors import UserError
from gen.hw.vit.layout import ViTDesign, capacity_of, image_beats, model_image
from verif.test_vit_system import synthetic_model

CAP = {"q": 16, "k": 16, "v": 16, "o": 16, "fc1": 32, "fc2": 64}


def _design(**kw):
    base = dict(lanes=4, tokens=17, dim=8, heads=2, ffn=16, layers=2, classes=3, capacity=CAP)
    base.update(kw)
    return ViTDesign(**base)


def test_default_fifo_holds_a_message():
    d = _design()
    assert d.message_beats == 17 * 8
    assert d.fifo_depth == d.message_beats


@settings(max_examples=300, deadline=None)
@given(depth=st.integers(1, 2000), flight=st.integers(1, 12))
def test_fifo_depth_rule(depth, flight):
    """Refused exactly when the ring can deadlock (``flight > 2 * (depth // message) + 1``:
    both engines send into full FIFOs) or a SEND can wait on a full FIFO
    (``depth // message < flight - 1``), with one line naming the depth that is needed."""
    message = 17 * 8
    whole = depth // message
    if flight > 2 * whole + 1:
        match = "fifo_depth .* can deadlock"
    elif whole < flight - 1:
        match = "fifo_depth .* can stall an engine"
    else:
        match = None
    if match:
        with pytest.raises(UserError, match=match) as info:
            _design(fifo_depth=depth, images_in_flight=flight)
        assert "\n" not in str(info.value)
        need = int(str(info.value).rsplit(">= ", 1)[1])
        assert need == max(flight - 1, 1) * message
        assert _design(fifo_depth=need, images_in_flight=flight).fifo_depth == need
    else:
        assert _design(fifo_depth=depth, images_in_flight=flight).fifo_depth == depth


@pytest.mark.parametrize("field,value,match", [
    ("tokens", 16, "tokens must be 17"), ("lanes", 0, "lanes must be at least 1"),
    ("dim", True, "dim must be a non-negative integer"), ("layers", "2", "layers must"),
])
def test_design_refuses_bad_fields(field, value, match):
    with pytest.raises(UserError, match=match):
        _design(**{field: value})


def test_model_image_and_refusals():
    arrays = synthetic_model(1, 8, 2, 16, 2, 3)
    design = _design(capacity=capacity_of(arrays, 4))
    image = model_image(design, arrays)
    assert len(image.nsa.steps) <= design.engine_shape("nsa").program_depth
    assert len(image.nmp.steps) <= design.engine_shape("nmp").program_depth
    assert set(image.nsa.entries) == {0, 1, 2} and set(image.nmp.entries) == {0, 1}
    # A model of another width, and one that keeps more weights than the engines hold.
    other = synthetic_model(1, 12, 2, 16, 2, 3)
    with pytest.raises(UserError, match="dims.dim is 12, the design was generated for 8"):
        model_image(design, other)
    small = _design(capacity={**capacity_of(arrays, 4), "fc1": 1})
    with pytest.raises(UserError, match="matrix fc1 keeps .* weight words, the kernel holds 1"):
        model_image(small, arrays)


def test_image_beats_patch_order_and_refusals():
    pixels = np.arange(64).reshape(8, 8) % 17
    beats = image_beats(pixels)
    assert beats[:4] == [pixels[0, 0], pixels[0, 1], pixels[1, 0], pixels[1, 1]]
    assert beats[4:8] == [pixels[0, 2], pixels[0, 3], pixels[1, 2], pixels[1, 3]]
    with pytest.raises(UserError, match="must be 8x8 pixels, not 8x7"):
        image_beats(pixels[:, :7])
    with pytest.raises(UserError, match="integers 0..16"):
        image_beats(pixels + 1)
    with pytest.raises(UserError, match="integers 0..16"):
        image_beats(pixels / 2)
