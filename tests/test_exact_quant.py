"""exact_quant: weights on a GGUF's 4-/8-bit block grid are re-encoded without loss; others are refused."""

from __future__ import annotations

import numpy as np

from slmforge.models import exact_quant


def _q4_1_weights(rng, n=48, k=128) -> np.ndarray:
    """What a Q4_1 GGUF dequantizes to: d*q + m per block of 32, d and m stored as float16."""
    q = rng.integers(0, 16, size=(n, k // 32, 32)).astype(np.float32)
    q[..., 0], q[..., 1] = 0, 15  # the quantizer maps each block's min to 0 and its max to 15
    d = rng.uniform(0.001, 0.02, size=(n, k // 32, 1)).astype(np.float16).astype(np.float32)
    m = rng.normal(0, 0.05, size=(n, k // 32, 1)).astype(np.float16).astype(np.float32)
    w = (q * d + m).reshape(n, k)
    w[3, :32] = m[3, 0, 0]  # a constant block (d == 0)
    return w


def _run_matmulnbits(packed, scales, offsets, x, k, n):
    """The re-encoded weight applied the way reencode wires it: MatMulNBits + block sums @ offsets."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMulNBits", ["x", "B", "s"], ["main"], domain="com.microsoft", K=k, N=n, bits=4,
                              block_size=32, accuracy_level=1),
             helper.make_node("Reshape", ["x", "shape"], ["blocks"]),
             helper.make_node("ReduceSum", ["blocks", "axes"], ["sums"], keepdims=0),
             helper.make_node("MatMul", ["sums", "off"], ["extra"]),
             helper.make_node("Add", ["main", "extra"], ["y"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales, "s"),
                               numpy_helper.from_array(offsets, "off"),
                               numpy_helper.from_array(np.asarray([0, 0, k // 32, 32], dtype=np.int64), "shape"),
                               numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_q4_1_weights_are_re_encoded_exactly_and_off_grid_weights_are_refused():
    rng = np.random.default_rng(0)
    w = _q4_1_weights(rng)  # [N, K]
    packed, scales, offsets = exact_quant.q4_1(w)
    x = rng.normal(size=(1, 1, w.shape[1])).astype(np.float32)
    y = _run_matmulnbits(packed, scales, offsets, x, w.shape[1], w.shape[0])
    reference = x[0] @ w.T
    assert np.abs(y[0] - reference).max() <= 1e-5 * np.abs(reference).max()

    # A fine-tuned (merged) weight is off the grid: a low-rank update of a tenth of a step.
    delta = 0.1 * 0.001 * rng.normal(size=(w.shape[0], 4)) @ rng.normal(size=(4, w.shape[1]))
    assert exact_quant.q4_1((w + delta).astype(np.float32)) is None
    assert exact_quant.q4_1(rng.normal(size=(8, 64)).astype(np.float32)) is None


def test_q8_0_weights_are_re_encoded_exactly_and_others_are_refused():
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, size=(16, 2, 32)).astype(np.float32)
    q[..., 0] = 127
    d = rng.uniform(0.001, 0.01, size=(16, 2, 1)).astype(np.float16).astype(np.float32)
    w = (q * d).reshape(16, 64)
    data, scales = exact_quant.q8_0(w)
    restored = ((data.astype(np.float32) - 128) * scales.reshape(16, 2, 1)).reshape(16, 64)
    assert np.array_equal(restored, w)
    assert exact_quant.q8_0(w + 0.3 * d.reshape(16, 2, 1).repeat(32, -1).reshape(16, 64)) is None


def test_lora_matmuls_stay_float_even_when_their_weights_lie_on_the_grid(tmp_path):
    """A base with adapter slots is built with a zero skeleton adapter: zeros lie on every grid, but its
    LoRA MatMuls must stay float MatMuls for adapter_slots.make_inputs to turn into inputs."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    w = _q4_1_weights(rng, n=48, k=64).T.copy()  # [K, N], on the Q4_1 grid
    lora = "model.layers.0.attn.q_proj.lora_{}.MatMul.weight"
    nodes = [helper.make_node("MatMul", ["x", "model.layers.0.attn.q_proj.MatMul.weight"], ["base"], name="q"),
             helper.make_node("MatMul", ["x", lora.format("A")], ["a"], name="q/lora_A/MatMul"),
             helper.make_node("MatMul", ["a", lora.format("B")], ["b"], name="q/lora_B/MatMul"),
             helper.make_node("Add", ["base", "b"], ["y"], name="q/lora/Add")]
    inits = [numpy_helper.from_array(w, "model.layers.0.attn.q_proj.MatMul.weight"),
             numpy_helper.from_array(np.zeros((64, 1), np.float32), lora.format("A")),
             numpy_helper.from_array(np.zeros((1, 48), np.float32), lora.format("B"))]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "model.onnx"))

    counts = exact_quant.reencode(tmp_path, accuracy_level=1)

    assert (counts["int4"], counts["float"]) == (1, 2)
    model = onnx.load(str(tmp_path / "model.onnx"))
    assert {lora.format("A"), lora.format("B")} <= {i.name for i in model.graph.initializer}
    assert [n.op_type for n in model.graph.node if n.name.startswith("q/lora_")] == ["MatMul", "MatMul"]
    x = rng.normal(size=(1, 1, 64)).astype(np.float32)
    y = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(y[0] - x[0] @ w).max() <= 1e-5 * np.abs(x[0] @ w).max()
