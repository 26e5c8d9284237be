"""Both GRU variants against an independent implementation: the GRU node of ONNX's
reference evaluator (onnx.reference), whose linear_before_reset=0 is the classic
GRU (fastrnn's reset_after=False) and 1 torch's (reset_after=True). The layers in
every direction with an initial state, and the single-step cell, in float64.
Gradients of the classic GRU are checked against tests/reference.py and finite
differences (test_layers_reference, test_gradcheck): ONNX's evaluator has none."""

import numpy as np
import pytest

import fastrnn

onnx = pytest.importorskip("onnx", reason="onnx (a test dependency) runs the reference GRU")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

T, B, I, H = 6, 3, 4, 5
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def _onnx_order(blocks):
    """torch's gate blocks r, z, n (stacked on axis 0) in ONNX's order z, r, h."""
    r, z, n = np.split(blocks, 3)
    return np.concatenate([z, r, n])


def _onnx_gru(layer, direction, linear_before_reset):
    """An ONNX model of one GRU node holding `layer`'s weights, and its inputs'
    weights (W, R, B)."""
    suffixes = ["_l0", "_l0_reverse"][:DIRECTIONS[direction]]
    if direction == "reverse":  # a one-direction node in reverse: fastrnn's reverse half
        suffixes = ["_l0_reverse"]
    p = layer.params
    weights = {
        "W": np.stack([_onnx_order(p["weight_ih" + s]) for s in suffixes]),
        "R": np.stack([_onnx_order(p["weight_hh" + s]) for s in suffixes]),
        "B": np.stack([np.concatenate([_onnx_order(p["bias_ih" + s]),
                                       _onnx_order(p["bias_hh" + s])]) for s in suffixes]),
    }
    D = len(suffixes)
    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "initial_h"], ["Y", "Y_h"],
                            hidden_size=H, direction=direction,
                            linear_before_reset=linear_before_reset)
    double = TensorProto.DOUBLE
    graph = helper.make_graph(
        [node], "gru",
        [helper.make_tensor_value_info("X", double, [T, B, I]),
         helper.make_tensor_value_info("initial_h", double, [D, B, H])],
        [helper.make_tensor_value_info("Y", double, [T, D, B, H]),
         helper.make_tensor_value_info("Y_h", double, [D, B, H])],
        initializer=[onnx.numpy_helper.from_array(value, name)
                     for name, value in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("reset_after", [False, True], ids=["reset_before", "reset_after"])
def test_gru_layer_matches_onnx_reference(reset_after, direction):
    rng = np.random.default_rng([reset_after, list(DIRECTIONS).index(direction)])
    layer = fastrnn.GRU(I, H, bidirectional=direction != "forward", dtype=np.float64,
                        seed=4, reset_after=reset_after)
    layer.reset_parameters(rng.integers(1 << 30))
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((2 if direction != "forward" else 1, B, H))
    out, h_n = layer(x, h0)
    onnx_h0 = h0[1:] if direction == "reverse" else h0
    model = _onnx_gru(layer, direction, linear_before_reset=int(reset_after))
    y, y_h = ReferenceEvaluator(model).run(None, {"X": x, "initial_h": onnx_h0})
    # ONNX's Y is (T, D, B, H); fastrnn's out (T, B, D*H), the directions side by side.
    if direction == "reverse":
        expected_out, expected_h = y[:, 0], y_h
        out, h_n = out[:, :, H:], h_n[1:]
    else:
        expected_out = np.concatenate(list(y.transpose(1, 0, 2, 3)), axis=2)
        expected_h = y_h
    np.testing.assert_allclose(out, expected_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n, expected_h, rtol=0, atol=1e-12)


def test_the_two_variants_differ_on_the_same_weights():
    """The comparison above can tell them apart: on the same weights the
    variants' outputs differ by far more than its tolerance."""
    x = np.random.default_rng(0).standard_normal((T, B, I))
    after = fastrnn.GRU(I, H, dtype=np.float64, seed=1)
    before = fastrnn.GRU(I, H, dtype=np.float64, seed=1, reset_after=False)
    assert np.max(np.abs(after(x)[0] - before(x)[0])) > 1e-3


@pytest.mark.parametrize("reset_after", [False, True], ids=["reset_before", "reset_after"])
def test_gru_cell_matches_onnx_reference(reset_after):
    """One step of GRUCell is ONNX's GRU over one time step."""
    rng = np.random.default_rng(7)
    layer = fastrnn.GRU(I, H, dtype=np.float64, seed=2, reset_after=reset_after)
    cell = fastrnn.GRUCell(I, H, dtype=np.float64, reset_after=reset_after)
    cell.load_state_dict({name[:-3]: value for name, value in layer.state_dict().items()})
    x = rng.standard_normal((T, B, I))
    h = rng.standard_normal((1, B, H))
    y, _ = ReferenceEvaluator(_onnx_gru(layer, "forward", int(reset_after))).run(
        None, {"X": x, "initial_h": h})
    state = h[0]
    for t in range(T):
        state = cell(x[t], state)
        np.testing.assert_allclose(state, y[t, 0], rtol=0, atol=1e-12)
