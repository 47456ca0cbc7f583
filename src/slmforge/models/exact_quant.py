"""Lossless int4 for weights that already lie on a 4-bit block grid (a model shipped as a GGUF).

SmolLM2-135M-Instruct reaches slmforge as a Q4_1 GGUF: each linear weight is `d*q + m` per block of
32 inputs (q in 0..15, one d and m per block) and the tied embedding is Q8_0 (`d*q`, q in -127..127).
Requantizing such weights with the builder's int4 methods rounds them a second time onto another
grid: on the fine-tuned model the best method kept 84 % of the held-out accuracy, the default 44 %
(bench/results/int4_options.json). onnxruntime's MatMulNBits takes this very shape — 4-bit values
with a scale and a float zero point per block (zero point = -m/d) — and its 8-bit MatMulNBits and
GatherBlockQuantized take Q8_0, so the base is re-encoded without loss. The fine-tuned adapter is
not on the grid: it stays float32 beside it (the model is built from base + adapter).

`reencode` rewrites an fp32 onnxruntime-genai folder made by the builder: every MatMul weight found
on a Q4_1 grid becomes 4-bit, one on a Q8_0 grid (the LM head) 8-bit, a tied embedding Gather reads
the LM head's 8-bit weights; anything else stays as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BLOCK = 32
# A weight is on the grid when every value is within this fraction of its block's step of the
# grid point: rounding leaves ~1e-7 of a step, an off-grid (fine-tuned, merged) weight ~0.25.
GRID_TOLERANCE = 1e-3


def q4_1(w_t: np.ndarray):
    """(packed uint8 [N, K/32, 16], scales [N*K/32], block offsets [K/32, N]) when `w_t` [N, K] is on
    a Q4_1 grid, else None. Symmetric MatMulNBits gives (q - 8) * d; the offsets m + 8d per block
    are added back through the block sums of the input (see reencode)."""
    n, k = w_t.shape
    if k % BLOCK:
        return None
    blocks = w_t.reshape(n, k // BLOCK, BLOCK).astype(np.float32)
    low, high = blocks.min(-1), blocks.max(-1)
    # Q4_1 stores d and m as float16; its block min is q=0 and its max q=15 exactly.
    d = ((high - low) / 15).astype(np.float16).astype(np.float32)
    step = np.where(d > 0, d, 1.0)
    q = np.clip(np.rint((blocks - low[..., None]) / step[..., None]), 0, 15)
    if not np.all(np.abs(q * d[..., None] + low[..., None] - blocks) <= GRID_TOLERANCE * step[..., None]):
        return None
    q = np.where(d[..., None] > 0, q, 8).astype(np.uint8)  # a constant block is all offset
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    offsets = (low + 8 * d).T.astype(np.float32)
    return packed, step.reshape(-1).astype(np.float32), np.ascontiguousarray(offsets)


def q8_0(w_t: np.ndarray):
    """(uint8 [N, K/32, 32] holding q+128, scales [N*K/32]) when `w_t` [N, K] is on a Q8_0 grid."""
    n, k = w_t.shape
    if k % BLOCK:
        return None
    blocks = w_t.reshape(n, k // BLOCK, BLOCK).astype(np.float32)
    d = (np.abs(blocks).max(-1) / 127).astype(np.float16).astype(np.float32)
    step = np.where(d > 0, d, 1.0)
    q = np.clip(np.rint(blocks / step[..., None]), -127, 127)
    if not np.all(np.abs(q * d[..., None] - blocks) <= GRID_TOLERANCE * step[..., None]):
        return None
    return (q + 128).astype(np.uint8), step.reshape(-1).astype(np.float32)


def on_grid(model_folder: str | Path) -> bool:
    """Whether a Hugging Face folder's first linear weight lies on a Q4_1 grid (cheap: one tensor)."""
    from safetensors import safe_open

    files = sorted(Path(model_folder).glob("*.safetensors"))
    if not files:
        return False
    with safe_open(str(files[0]), framework="np") as f:
        names = [n for n in f.keys() if n.endswith("q_proj.weight")]
        if not names:
            return False
        return q4_1(f.get_tensor(names[0])) is not None


def reencode(folder: Path, accuracy_level: int) -> dict[str, int]:
    """Rewrite folder/model.onnx (fp32, from the builder) with grid weights in 4/8 bits; counts by kind."""
    import onnx
    from onnx import helper, numpy_helper

    path = folder / "model.onnx"
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    counts = {"int4": 0, "int8": 0, "float": 0, "embedding_int8": 0}
    replaced: dict[str, str] = {}  # fp32 weight name -> its 8-bit data, for a tied embedding
    new_nodes, new_inits, dropped = [], [], set()
    block_sums: dict[str, str] = {}  # input name -> its per-block sums, shared by the MatMuls reading it
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight not in inits or len(inits[weight].dims) != 2:
            new_nodes.append(node)
            continue
        if ".lora_" in weight:
            # An adapter's MatMuls stay float: a trained one is off the grid anyway, and the zero skeleton of
            # a base with adapter slots (adapter_slots.py) would look on it and lose the slots it is built for.
            new_nodes.append(node)
            counts["float"] += 1
            continue
        w = numpy_helper.to_array(inits[weight])  # [K, N]
        k, n = w.shape
        base = weight.removesuffix(".weight")
        attrs = dict(K=k, N=n, block_size=BLOCK, accuracy_level=accuracy_level)
        four = q4_1(w.T)
        if four is not None:
            packed, scales, offsets = four
            new_inits += [numpy_helper.from_array(packed, f"{base}.q4"), numpy_helper.from_array(scales, f"{base}.q4_scales"),
                          numpy_helper.from_array(offsets, f"{base}.q4_offsets")]
            sums = _block_sums(node.input[0], k, block_sums, new_nodes, new_inits)
            main, extra = f"{node.name}/Q4exact/output_0", f"{node.name}/Q4offsets/output_0"
            new_nodes += [
                helper.make_node("MatMulNBits", [node.input[0], f"{base}.q4", f"{base}.q4_scales"], [main],
                                 name=node.name + "_Q4exact", domain="com.microsoft", bits=4, **attrs),
                helper.make_node("MatMul", [sums, f"{base}.q4_offsets"], [extra], name=node.name + "_Q4offsets"),
                helper.make_node("Add", [main, extra], list(node.output), name=node.name + "_Q4add"),
            ]
            counts["int4"] += 1
        elif (eight := q8_0(w.T)) is not None:
            data, scales = eight
            new_inits += [numpy_helper.from_array(data, f"{base}.q8"), numpy_helper.from_array(scales, f"{base}.q8_scales")]
            new_nodes.append(helper.make_node("MatMulNBits", [node.input[0], f"{base}.q8", f"{base}.q8_scales"],
                                              list(node.output), name=node.name + "_Q8exact", domain="com.microsoft",
                                              bits=8, **attrs))
            replaced[weight] = base
            counts["int8"] += 1
        else:
            new_nodes.append(node)
            counts["float"] += 1
            continue
        dropped.add(weight)
    graph.ClearField("node")
    graph.node.extend(_tied_embedding(new_nodes, replaced, inits, new_inits, counts))
    kept = [i for i in graph.initializer if i.name not in dropped]
    graph.ClearField("initializer")
    graph.initializer.extend(kept + new_inits)
    data = folder / "model.onnx.data"
    data.unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)
    return counts


def _block_sums(x: str, k: int, cache: dict[str, str], nodes: list, inits: list) -> str:
    """Sums of `x` [..., K] over each block of 32 inputs: [..., K/32] (one per input tensor)."""
    from onnx import helper, numpy_helper

    if x in cache:
        return cache[x]
    name = f"{x}/block_sums"
    shape, axes = f"{name}/shape", f"{name}/axes"
    if not any(i.name == shape for i in inits):
        inits += [numpy_helper.from_array(np.asarray([0, 0, k // BLOCK, BLOCK], dtype=np.int64), shape),
                  numpy_helper.from_array(np.asarray([-1], dtype=np.int64), axes)]
    nodes += [helper.make_node("Reshape", [x, shape], [f"{name}/blocks"], name=f"{name}/Reshape"),
              helper.make_node("ReduceSum", [f"{name}/blocks", axes], [name], name=f"{name}/ReduceSum", keepdims=0)]
    cache[x] = name
    return name


def _tied_embedding(nodes, replaced: dict[str, str], inits, new_inits, counts):
    """A Gather reading Transpose(LM head weight) reads the head's 8-bit weights instead."""
    from onnx import helper, numpy_helper

    transposes = {n.output[0]: n for n in nodes if n.op_type == "Transpose" and n.input[0] in replaced}
    out = []
    for node in nodes:
        if node.op_type == "Transpose" and node.output[0] in transposes:
            continue
        source = transposes.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        if source is None:
            out.append(node)
            continue
        base = replaced[source.input[0]]
        vocab, hidden = int(inits[source.input[0]].dims[1]), int(inits[source.input[0]].dims[0])
        shape = f"{base}.q8_rows_shape"
        new_inits.append(numpy_helper.from_array(np.asarray([vocab, hidden], dtype=np.int64), shape))
        out.append(helper.make_node("Reshape", [f"{base}.q8", shape], [f"{base}.q8_rows"], name=node.name + "_rows"))
        out.append(helper.make_node("GatherBlockQuantized", [f"{base}.q8_rows", node.input[1], f"{base}.q8_scales_rows"],
                                    list(node.output), name=node.name + "_Q8exact", domain="com.microsoft",
                                    bits=8, block_size=BLOCK, gather_axis=0, quantize_axis=1))
        scales = next(i for i in new_inits if i.name == f"{base}.q8_scales")
        new_inits.append(numpy_helper.from_array(numpy_helper.to_array(scales).reshape(vocab, hidden // BLOCK),
                                                 f"{base}.q8_scales_rows"))
        counts["embedding_int8"] += 1
    return out
