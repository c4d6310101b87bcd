"""Bad input gets one clear line, never a traceback: generated configs, config files and board
files (hypothesis), and advice that the next check accepts."""

import copy
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen.boards import get_board, load_boards
from gen.config import DEFAULT_CONFIG, SCHEMA, load_config, parse_config
from gen.design import prepare_design, usable_bauds
from gen.errors import UserError
from gen.hw.pll import nearest_clocks, plan_pll

DEFAULT_RAW = yaml.safe_load(DEFAULT_CONFIG.read_text())
BOARD_FILE = (DEFAULT_CONFIG.parent.parent.parent / "boards" / "ulx3s-85f.yaml").read_text()
EXAMPLES = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=300),
                    st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


def _paths(schema, prefix=()):
    for key, spec in schema.items():
        yield prefix + (key,)
        if isinstance(spec, dict):
            yield from _paths(spec, prefix + (key,))


SCHEMA_PATHS = sorted(_paths(SCHEMA)) + [("allocator",), ("allocator", "seed"),
                                         ("allocator", "evaluations")]


#: Values near the valid ones, so that valid combinations of the other fields get tried too:
#: the dataflows, drain lanes that do and do not divide the columns, small sizes.
PLAUSIBLE = st.sampled_from(["output_stationary", "weight_stationary", "weight-stationary", 1, 2,
                             3, 4, 8, 16, 0, -1, 64, 100])


@st.composite
def mutated_configs(draw):
    """The default config with a few places set to random values, deleted, or renamed."""
    raw = copy.deepcopy(DEFAULT_RAW)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(SCHEMA_PATHS))
        node = raw
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        action = draw(st.sampled_from(("set", "delete", "rename")))
        if action == "delete":
            node.pop(path[-1], None)
        elif action == "rename":
            node[draw(st.text(min_size=1, max_size=10))] = node.pop(path[-1], None)
        else:
            node[path[-1]] = draw(st.one_of(values, PLAUSIBLE))
    return raw


def _one_clear_line(exc, *, names=None):
    message = str(exc)
    assert message and "\n" not in message and len(message) < 600, message
    assert "Traceback" not in message
    if names is not None:
        assert names in message, message


@EXAMPLES
@given(mutated_configs())
def test_any_config_mapping_is_accepted_or_refused_in_one_line(raw):
    try:
        config = parse_config(raw, source="generated.yaml")
    except UserError as exc:
        _one_clear_line(exc, names="generated.yaml")
        return
    if config.auto_fields:         # sizing would run the allocator: loading alone must pass
        return
    try:
        prepare_design(config, progress=lambda line: None)
    except UserError as exc:
        _one_clear_line(exc, names="generated.yaml")


@EXAMPLES
@given(st.binary(max_size=400))
def test_any_bytes_as_a_config_file_are_accepted_or_refused_in_one_line(tmp_path, data):
    path = tmp_path / "bytes.yaml"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        load_config(path)
    _one_clear_line(info.value, names=str(path))


@EXAMPLES
@given(st.text(max_size=400))
def test_any_text_as_a_config_file_is_accepted_or_refused_in_one_line(tmp_path, text):
    path = tmp_path / "text.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except UserError as exc:
        _one_clear_line(exc, names=str(path))


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty"),
    (b"   \n# only a comment\n", "is empty"),
    (b"\xff\xfe n\x00a\x00m\x00e\x00", "binary"),
    (b"name: caf\xe9\n", "not UTF-8"),
    (DEFAULT_CONFIG.read_bytes() + b"name: again\n", "'name' is given twice"),
    (b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
     "anchors"),
    (b"name: [unclosed\n", "not valid YAML"),
])
def test_broken_config_files_name_the_file(tmp_path, content, expected):
    path = tmp_path / "broken.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError, match=expected) as info:
        load_config(path)
    _one_clear_line(info.value, names=str(path))


def test_a_folder_a_missing_file_and_a_long_name(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        load_config(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nothing.yaml")
    raw = copy.deepcopy(DEFAULT_RAW)
    raw["name"] = "x" * 100_000
    with pytest.raises(UserError, match="at most 64") as info:
        parse_config(raw)
    _one_clear_line(info.value)


def test_useless_buffer_sizes_are_errors():
    raw = copy.deepcopy(DEFAULT_RAW)
    raw["buffers"]["param_depth"] = raw["array"]["cols"] - 1
    with pytest.raises(UserError, match="buffers.param_depth: 7 is below array.cols"):
        parse_config(raw)
    raw = copy.deepcopy(DEFAULT_RAW)
    raw["buffers"]["out_depth"] = 32
    with pytest.raises(UserError, match="buffers.out_depth: 32 bytes cannot hold one 8x8 tile"):
        parse_config(raw)


def test_design_errors_name_the_config_file(tmp_path):
    raw = copy.deepcopy(DEFAULT_RAW)
    raw["host"]["baud"] = 6_000_000
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=rf"^{path}: host.baud: 6000000 exceeds .* use 3000000$"):
        prepare_design(load_config(path))
    raw["host"]["baud"] = 1_000_000
    raw["array"].update(rows=32, cols=32)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=rf"^{path}: design 'default' does not fit") as info:
        prepare_design(load_config(path))
    _one_clear_line(info.value)


@settings(max_examples=300, deadline=None)
@given(st.integers(1200, 12_000_000))
def test_baud_advice_is_always_accepted(baud):
    raw = copy.deepcopy(DEFAULT_RAW)
    raw["host"]["baud"] = baud
    try:
        prepare_design(parse_config(raw))
        return
    except UserError as exc:
        message = str(exc)
    _one_clear_line(message)
    advice = message.rsplit("; use ", 1)[1].split(" or ")
    assert advice and all(a.isdigit() for a in advice), message
    for rate in advice:
        raw["host"]["baud"] = int(rate)
        assert prepare_design(parse_config(raw)).baud_actual > 0


def test_every_usable_baud_is_usable():
    board = get_board("ulx3s")
    rates = usable_bauds(board, board.oscillator_mhz)
    assert max(rates) == 2_777_778 and 1_000_000 in rates and 115_200 not in rates
    assert 115_207 in rates


@settings(max_examples=200, deadline=None)
@given(st.floats(10.0, 400.0))
def test_pll_advice_names_clocks_it_can_make(mhz):
    strict = 20    # ppm: tight enough that most requests fail and advice is given
    try:
        plan_pll(25.0, mhz, tolerance_ppm=strict)
        return
    except UserError as exc:
        _one_clear_line(exc)
        assert "nearest clocks it makes are" in str(exc)
    near = nearest_clocks(25.0, mhz)
    assert 1 <= len(near) <= 2
    for clock in near:
        assert abs(plan_pll(25.0, clock, tolerance_ppm=strict).output_mhz - clock) < 1e-5
    assert all(not (min(near) < c < max(near)) or math.isclose(c, mhz) for c in near)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_one_bad_board_file_leaves_the_others_working(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("boards")
    (folder / "ulx3s-85f.yaml").write_text(BOARD_FILE)
    raw = yaml.safe_load(BOARD_FILE)
    raw["name"] = "broken"
    key = data.draw(st.sampled_from(sorted(raw) + ["budget.lut4", "uart.max_baud"]))
    node, leaf = (raw, key) if "." not in key else (raw[key.split(".")[0]], key.split(".")[1])
    if data.draw(st.booleans()):
        node[leaf] = data.draw(values)
    else:
        node.pop(leaf, None)
    text = yaml.safe_dump(raw) if data.draw(st.booleans()) else data.draw(st.text(max_size=200))
    (folder / "broken.yaml").write_text(text)
    problems = []
    boards = load_boards(folder, problems)
    assert "ulx3s-85f" in boards
    assert get_board("ulx3s", folder).name == "ulx3s-85f"
    if len(boards) == 2 and not problems:
        return           # the change was harmless (an alias list, another valid name, say)
    assert len(problems) == 1
    _one_clear_line(problems[0], names="broken.yaml")
    with pytest.raises(UserError) as info:
        get_board("broken", folder)
    _one_clear_line(info.value, names="broken.yaml")


ALLOC_FLAGS = {
    "--seed": st.one_of(st.integers(-2 ** 40, 2 ** 40), st.text(max_size=8)),
    "--clock-mhz": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
    "--power-cap-mw": st.one_of(st.floats(-1e3, 1e4), st.text(max_size=8)),
    "--evaluations": st.one_of(st.integers(-5, 40), st.text(max_size=8)),
    "--name": st.text(max_size=80),
    "--baud": st.one_of(st.integers(-10, 20_000_000), st.text(max_size=8)),
    "--network": st.one_of(st.sampled_from(["default", "resnet50"]), st.text(max_size=12)),
}


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(ALLOC_FLAGS)), st.just(None), min_size=1,
                       max_size=3).flatmap(lambda chosen: st.fixed_dictionaries(
                           {flag: ALLOC_FLAGS[flag] for flag in chosen})))
def test_gen_alloc_flags_are_accepted_or_refused_in_one_line(tmp_path, capsys, flags):
    from gen.__main__ import main
    argv = ["alloc", "--method", "random", "--out", str(tmp_path)]
    if "--evaluations" not in flags:
        argv += ["--evaluations", "20"]
    for flag, value in flags.items():
        argv.append(f"{flag}={value}")
    try:
        code = main(argv)
    except SystemExit as exit:        # argparse refused a flag
        code = exit.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, err
    if code == 2:
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1, err
        _one_clear_line(errors[0])


def _small_matrix():
    import numpy as np
    from gen.sparse.format import CompressedMatrix
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (12, 10)) * (rng.random((12, 10)) < 0.4)
    w[3] = 0
    return CompressedMatrix.from_dense(w.astype(np.int8), 4,
                                       bias=rng.integers(-2 ** 31, 2 ** 31, 10),
                                       mult=rng.integers(0, 2 ** 31, 10),
                                       shift=rng.integers(1, 63, 10))


@EXAMPLES
@given(st.data())
def test_damaged_weight_files_are_refused_naming_the_file(tmp_path, data):
    from gen.sparse.format import CompressedMatrix
    original = _small_matrix()
    path = original.save(tmp_path / "w.npz", model="m", layer=0, matrix="q")
    raw = bytearray(path.read_bytes())
    how = data.draw(st.sampled_from(("truncate", "flip", "splice")))
    if how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    path.write_bytes(bytes(raw))
    try:
        loaded = CompressedMatrix.load(path)
    except UserError as exc:
        _one_clear_line(exc, names=str(path))
        return
    assert loaded == original         # a change zip ignores (its comment, say) is harmless


@pytest.mark.parametrize("edit, field", [
    (lambda a: a.update(values=a["values"] + 1), "content_sha256"),
    (lambda a: a.update(block_ptr=a["block_ptr"][::-1].copy()), "block_ptr"),
    (lambda a: a.update(bias=a["bias"].astype("int64") * 0 + 2 ** 40), "bias"),
    (lambda a: a.update(values=a["values"].astype("int16") * 0 + 300), "values"),
    (lambda a: a.update(shift=a["shift"] * 0 + 63), "shift"),
    (lambda a: a.update(mult=a["mult"] * 0 - 1), "mult"),
    (lambda a: a.update(row_index=a["row_index"] * 0 + 99), "row_index"),
])
def test_edited_weight_files_are_refused_naming_the_field(tmp_path, edit, field):
    import json
    import numpy as np
    from gen.sparse.format import CompressedMatrix, content_sha256
    path = _small_matrix().save(tmp_path / "w.npz", model="m", layer=0, matrix="q")
    with np.load(path) as z:
        arrays = {key: z[key] for key in z.files}
    header = json.loads(str(arrays.pop("header")))
    edit(arrays)
    if field != "content_sha256":     # an edit that also fixed the hash: the checks catch it
        header["content_sha256"] = content_sha256(arrays)
    np.savez(path, header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(UserError, match=f"field '{field}'") as info:
        CompressedMatrix.load(path)
    _one_clear_line(info.value, names=str(path))


def test_a_damaged_model_cache_is_rebuilt_with_a_warning(tmp_path, capsys):
    from gen.sparse.vit import load_cached_state, save_cached_state, TinyViT, state_sha256
    model = TinyViT()
    weights, meta = tmp_path / "m.pt", tmp_path / "m.json"
    save_cached_state(model, {"sha256": state_sha256(model)}, weights, meta)
    assert load_cached_state(weights, meta) is not None
    for damage in (lambda: weights.write_bytes(weights.read_bytes()[:200]),
                   lambda: meta.write_text("{\"sha256\": "),
                   lambda: meta.write_text('{"sha256": "0"}')):
        save_cached_state(model, {"sha256": state_sha256(model)}, weights, meta)
        damage()
        assert load_cached_state(weights, meta) is None
        assert "is damaged" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    (["prune", "--seed", "-1"], "argument --seed: -1 is outside"),
    (["prune", "--block", "0"], "argument --block: 0 must be 1 .. 64"),
    (["prune", "--tolerance", "nan"], "argument --tolerance"),
    (["build", "--seed", "x"], "argument --seed: 'x' is not an integer seed"),
    (["workloads", "resnet50", "--batch", "0"], "argument --batch"),
])
def test_flags_are_checked_in_every_command(capsys, argv, expected):
    from gen.__main__ import main
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and err.count("\n") == 0, err


def test_output_folders_are_checked_before_long_work(tmp_path, capsys):
    from gen.__main__ import main
    blocker = tmp_path / "file"
    blocker.write_text("")
    for argv in (["prune", "--out", str(blocker)], ["prune", "--cache", str(blocker / "x")],
                 ["alloc", "--out", str(blocker)]):
        start = __import__("time").monotonic()
        assert main(argv) == 2
        assert __import__("time").monotonic() - start < 10, argv    # before training or search
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(blocker) in err, err


_arrays = st.one_of(
    st.lists(st.integers(-300, 300), max_size=6),
    st.lists(st.lists(st.integers(-300, 300), min_size=1, max_size=3), max_size=3),
    st.lists(st.lists(st.lists(st.integers(-300, 300), min_size=1, max_size=3), min_size=1,
                      max_size=3), max_size=3),
    st.lists(st.lists(st.lists(st.floats(-3, 3), min_size=1, max_size=2), min_size=1,
                      max_size=2), max_size=2),
    st.text(max_size=5), st.none())


_vectors = st.one_of(st.integers(-2 ** 70, 2 ** 70),
                    st.lists(st.integers(-2 ** 33, 2 ** 33), max_size=4), st.text(max_size=3))


@given(_arrays, _arrays, _vectors, _vectors, st.one_of(st.integers(-3, 70), _vectors))
@EXAMPLES
def test_batch_operands_are_checked_in_one_line(a, w, bias, mult, shift):
    """`Driver.gemm_batch`'s operand check: a batch it takes has the shapes and ranges of the
    numeric contract; anything else is one LayoutError line naming what to change."""
    import numpy as np
    from gen.host.layout import LayoutError, check_batch_operands
    try:
        a_, w_, *_, shape = check_batch_operands(a, w, bias, mult, shift)
    except LayoutError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert a_.shape == (shape.batch, shape.m, shape.k) and w_.shape == (shape.batch, shape.k,
                                                                        shape.n)
    assert np.abs(a_).max() <= 128 and np.abs(w_).max() <= 128
