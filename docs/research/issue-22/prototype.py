# Research, not product code: the issue-22 feasibility study of separate LoRA adapters (README.md beside it). Not imported, not tested.
"""Prototype (issue 22 feasibility): one int4 base whose LoRA weights are graph inputs, plus one
`.onnx_adapter` file per fine-tune, served by onnxruntime-genai 0.18.0 (og.Adapters).

Pins: onnxruntime 1.32.0, onnxruntime-genai 0.18.0, onnx-ir 1.1.0, peft 0.21.2, transformers 5.24.
Run with PYTHONPATH=/work/main/src (slmforge's builder wrapper is reused for the int4 build).

  python prototype.py base   MODEL_DIR OUT_DIR [--modules q_proj,v_proj,o_proj] [--precision fp32]
                                                                        # int4 base, LoRA slots as inputs
  python prototype.py baked  MODEL_DIR ADAPTER_DIR OUT_DIR              # today's build (adapter in the graph)
  python prototype.py plain  MODEL_DIR OUT_DIR                          # int4 base without LoRA slots
  python prototype.py convert ADAPTER_DIR BASE_DIR OUT.onnx_adapter     # peft adapter -> .onnx_adapter
  python prototype.py check  MODEL_DIR BASE_DIR --adapter NAME=ADAPTER_DIR:FILE ... [--baked NAME=DIR] [--plain DIR]
  python prototype.py bench-adapters BASE_DIR FILE1 FILE2               # one process: base + 2 adapters
  python prototype.py bench-baked DIR1 DIR2                             # one process: 2 baked models
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The builder's names for the float LoRA MatMul weights (make_matmul_lora -> make_matmul_float):
#   model.layers.{i}.attn.{q,k,v,o}_proj.lora_{A,B}.MatMul.weight, model.layers.{i}.mlp.{gate,up,down}_proj...
LORA_INPUT = re.compile(r"^model\.layers\.(\d+)\.(attn|mlp)\.(\w+_proj)\.lora_([AB])\.MatMul\.weight$")
# peft's keys: base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight
PEFT_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.weight$")
BASE_META = "adapter_base.json"   # sidecar in the base folder: digest + LoRA slots


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- base build
def _linear_shapes(model_dir: Path) -> dict[str, tuple[int, int]]:
    """{peft module path: (out, in)} for every decoder Linear, read from the safetensors headers."""
    from safetensors import safe_open
    shapes = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="np") as st:
            for k in st.keys():
                m = re.match(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.weight$", k)
                if m:
                    shapes[k[: -len(".weight")]] = tuple(st.get_slice(k).get_shape())
    return shapes


def skeleton_adapter(model_dir: Path, out_dir: Path, r: int = 1, modules: list[str] | None = None) -> Path:
    """A peft LoRA folder on every decoder Linear, zeros: only its *shape* matters to the base build."""
    import numpy as np
    from safetensors.numpy import save_file
    shapes = _linear_shapes(model_dir)
    if modules:
        shapes = {k: v for k, v in shapes.items() if k.split(".")[-1] in modules}
    modules = sorted({k.split(".")[-1] for k in shapes})
    tensors = {}
    for path, (out_f, in_f) in shapes.items():
        tensors[f"base_model.model.{path}.lora_A.weight"] = np.zeros((r, in_f), np.float32)
        tensors[f"base_model.model.{path}.lora_B.weight"] = np.zeros((out_f, r), np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    (out_dir / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": r, "lora_dropout": 0.0,
        "target_modules": modules, "bias": "none", "base_model_name_or_path": str(model_dir)}))
    return out_dir


def _int4_build(model_dir: Path, out_dir: Path, adapter: Path | None, precision: str = "int4") -> None:
    from slmforge.models import onnx_builder  # int4 RTN block 32, acc 4, LoRA MatMuls kept float
    onnx_builder.build(source=str(model_dir), out_dir=out_dir, precision=precision, execution_provider="cpu",
                       block_size=32, accuracy_level=4, extra={}, adapter=adapter)


def lora_to_inputs(src: Path, dst: Path, unique_rank: bool = True) -> dict[str, list]:
    """ExtractAdapters(make_inputs, dynamic_lora_r, optional_inputs) on a builder folder: every LoRA
    initializer becomes a graph input [in, lora_r] / [lora_r, out] whose default is a rank-0 tensor."""
    import numpy as np
    import onnx_ir as ir
    model = ir.load(str(src / "model.onnx"))
    graph = model.graph
    slots = {}
    for name, value in list(graph.initializers.items()):
        m = LORA_INPUT.match(name)
        if not m:
            continue
        rows, cols = value.shape
        rank_axis = 1 if m.group(4) == "A" else 0
        fixed = [rows, cols]
        fixed[rank_axis] = 0
        value.const_value = ir.Tensor(np.zeros(fixed, np.float32), name=name)
        dims = [rows, cols]
        # One symbolic rank per module (A and B share it). A single "lora_r" for all slots (Olive's choice)
        # makes ORT's memory planner try to share buffers across modules of different rank (an adapter on
        # q/v/o leaves k/gate/up/down at rank 0) and print "Shape mismatch attempting to re-use buffer" per
        # slot and run; the logits were the same (REPORT.md pitfall 1), the log is not.
        dims[rank_axis] = (name.rsplit(".lora_", 1)[0] + ".lora_r") if unique_rank else "lora_r"
        value.shape = ir.Shape(dims)
        graph.inputs.append(value)
        slots[name] = dims
        if m.group(4) == "A":
            # The builder declared the A MatMul's output as [batch, seq, r_skeleton]: a stale static rank
            # the ORT planner trusts (buffer reuse by declared shape). Give it the symbolic rank.
            for node in value.uses():
                out = node.node.outputs[0]
                if out.shape is not None:
                    out.shape = ir.Shape([*list(out.shape)[:-1], dims[1]])
    if not slots:
        raise SystemExit(f"{src}: no LoRA MatMul initializers (build with an adapter first)")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name not in ("model.onnx", "model.onnx.data"):
            shutil.copy2(f, dst / f.name)
    ir.save(model, str(dst / "model.onnx"), external_data="model.onnx.data")
    return slots


def base_digest(base: Path) -> str:
    h = hashlib.sha256()
    for name in ("model.onnx", "model.onnx.data"):
        if (base / name).exists():
            h.update((base / name).read_bytes())
    return h.hexdigest()


def build_base(model_dir: Path, out_dir: Path, r: int = 1, precision: str = "int4", unique_rank: bool = True,
               modules: list[str] | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        skel = skeleton_adapter(model_dir, tmp / "skeleton", r=r, modules=modules)
        _int4_build(model_dir, tmp / "built", skel, precision)
        slots = lora_to_inputs(tmp / "built", out_dir, unique_rank)
    digest = base_digest(out_dir)
    (out_dir / BASE_META).write_text(json.dumps({"digest": digest, "slots": slots}, indent=1))
    print(f"base {out_dir}: {len(slots)} LoRA inputs, digest {digest[:12]}")


# ---------------------------------------------------------------- adapter file
def _split_fused(module: str, ab: str, w, cfg: dict) -> dict[str, object]:
    """The builder's split of fused Phi-3 modules (make_attention_unpacked_lora / make_mlp_unpacked_lora):
    lora_A is shared, lora_B's output rows are split."""
    if module == "qkv_proj":
        hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
        if ab == "A":
            return {"q_proj": w, "k_proj": w, "v_proj": w}
        return {"q_proj": w[:q], "k_proj": w[q:q + kv], "v_proj": w[q + kv:]}
    if module == "gate_up_proj":
        i = cfg["intermediate_size"]
        if ab == "A":
            return {"gate_proj": w, "up_proj": w}
        return {"gate_proj": w[:i], "up_proj": w[i:]}
    return {module: w}


def peft_to_parameters(adapter_dir: Path, model_config: dict) -> tuple[dict, dict]:
    """{graph input name: float32 array} for a peft LoRA folder; B carries the scaling, both transposed."""
    import numpy as np
    from safetensors.numpy import load_file
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    peft_type = cfg.get("peft_type")
    if peft_type != "LORA":
        raise SystemExit(f"{adapter_dir}: a {peft_type} adapter; only LORA maps onto LoRA input slots")
    if cfg.get("use_dora"):
        raise SystemExit(f"{adapter_dir}: DoRA (use_dora) needs a magnitude rescale the base graph does not have")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            raise SystemExit(f"{adapter_dir}: {key} is not handled by this prototype")
    if cfg.get("bias", "none") != "none" or cfg.get("modules_to_save"):
        raise SystemExit(f"{adapter_dir}: bias/modules_to_save change base weights; not an adapter-only delta")
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    params = {}
    for key, w in weights.items():
        m = PEFT_KEY.match(key)
        if not m:
            raise SystemExit(f"{adapter_dir}: unexpected tensor {key}")
        layer, block, module, ab = m.groups()
        w = w.astype(np.float32)
        if ab == "B":
            w = w * np.float32(scaling)
        part = "attn" if block == "self_attn" else "mlp"
        for sub, piece in _split_fused(module, ab, w, model_config).items():
            params[f"model.layers.{layer}.{part}.{sub}.lora_{ab}.MatMul.weight"] = np.ascontiguousarray(piece.T)
    return params, cfg


def convert(adapter_dir: Path, base: Path, out_file: Path) -> dict:
    import numpy as np
    import onnxruntime as ort
    meta = json.loads((base / BASE_META).read_text())
    model_config = _model_config_for(base)
    params, cfg = peft_to_parameters(adapter_dir, model_config)
    slots = meta["slots"]
    for name, arr in params.items():   # the wrong-base check og does not do (see REPORT)
        if name not in slots:
            raise SystemExit(f"{adapter_dir}: {name} has no slot in base {base}")
        want = slots[name]
        fixed = [d for d in want if isinstance(d, int)]
        got = [d for d, w in zip(arr.shape, want) if isinstance(w, int)]
        if fixed != got:
            raise SystemExit(f"{adapter_dir}: {name} is {list(arr.shape)}, base {base} expects {want}")
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(int(meta["digest"][:7], 16))  # int32 only: 28 bits of the base digest
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fmt.export_adapter(str(out_file))
    return {"tensors": len(params), "rank": cfg["r"], "bytes": out_file.stat().st_size,
            "float_bytes": int(sum(v.nbytes for v in params.values()))}


def _model_config_for(base: Path) -> dict:
    """The HF config the builder copied next to the ONNX model? It does not: read genai_config instead."""
    g = json.loads((base / "genai_config.json").read_text())["model"]
    d = g["decoder"]
    hd = d["head_size"]
    return {"num_attention_heads": d["num_attention_heads"], "num_key_value_heads": d["num_key_value_heads"],
            "head_dim": hd, "hidden_size": d["hidden_size"],
            "intermediate_size": _intermediate_from_slots(base)}


def _intermediate_from_slots(base: Path) -> int | None:
    slots = json.loads((base / BASE_META).read_text())["slots"]
    for name, dims in slots.items():
        if ".mlp.gate_proj.lora_B" in name or ".mlp.up_proj.lora_B" in name:
            return int(dims[1])
    return None


def read_adapter(path: Path) -> dict:
    import onnxruntime as ort
    fmt = ort.AdapterFormat.read_adapter(str(path))
    return {"adapter_version": fmt.get_adapter_version(), "model_version": fmt.get_model_version(),
            "format_version": fmt.get_format_version(), "parameters": len(fmt.get_parameters())}


# ---------------------------------------------------------------- og serving
class Served:
    def __init__(self, folder: Path):
        import onnxruntime_genai as og
        self.og = og
        cfg = og.Config(str(folder))
        self.model = og.Model(cfg)
        self.tok = og.Tokenizer(self.model)
        self.tok.update_options(add_special_tokens="true")
        self.adapters = None

    def load(self, path: Path, name: str) -> float:
        if self.adapters is None:
            self.adapters = self.og.Adapters(self.model)
        t = time.perf_counter()
        self.adapters.load(str(path), name)
        return time.perf_counter() - t

    def generator(self, max_length: int, adapter: str | None, min_length: int = 0):
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=max_length, min_length=min_length)
        g = og.Generator(self.model, params)
        if adapter:
            g.set_active_adapter(self.adapters, adapter)
        return g

    def greedy(self, ids: list[int], new: int, adapter: str | None) -> tuple[list[int], list]:
        import numpy as np
        g = self.generator(len(ids) + new, adapter)
        g.append_tokens(ids)
        first = np.array(g.get_logits()).reshape(-1).copy()
        out = []
        while not g.is_done():
            g.generate_next_token()
            out.append(int(g.get_next_tokens()[0]))
        return out, first


def torch_reference(model_dir: Path, adapter_dir: Path | None, prompts_ids: list[list[int]], new: int):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.eval()
    res = []
    with torch.no_grad():
        for ids in prompts_ids:
            x = torch.tensor([ids])
            first = model(x).logits[0, -1].numpy().copy()
            gen = model.generate(x, max_new_tokens=new, do_sample=False, min_new_tokens=0,
                                 pad_token_id=model.config.pad_token_id or 0)
            res.append((gen[0, len(ids):].tolist(), first))
    return res


def _cos(a, b):
    import numpy as np
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _strip_eos(seq, eos):
    return seq[: seq.index(eos) + 1] if eos in seq else seq


def check(args) -> None:
    import numpy as np
    prompts = json.loads(Path(args.prompts).read_text()) if args.prompts else [
        "### Text: I love this so much\n### The tone is:\n", "### Text: the train is late again\n### The tone is:\n",
        "### Text: what a wonderful surprise\n### The tone is:\n", "### Text: I am scared of the dark\n### The tone is:\n",
        "Hello, how are you?", "The capital of France is"]
    answers = [p.get("answer") if isinstance(p, dict) else None for p in prompts]
    prompts = [p["prompt"] if isinstance(p, dict) else p for p in prompts]
    base = Served(Path(args.base))
    eos = json.loads((Path(args.base) / "genai_config.json").read_text())["model"]["eos_token_id"]
    eos = eos[0] if isinstance(eos, list) else eos
    ids = [list(map(int, base.tok.encode(p))) for p in prompts]
    adapters = {}
    for spec in args.adapter:
        name, rest = spec.split("=", 1)
        adir, afile = rest.split(":", 1)
        adapters[name] = (Path(adir), Path(afile))
        print(f"load {name}: {base.load(Path(afile), name)*1000:.1f} ms")
    report = {}
    for name in adapters:
        d = max(float(np.abs(base.greedy(p, 1, name)[1] - base.greedy(p, 1, None)[1]).max()) for p in ids)
        print(f"adapter {name}: max |logit(adapter) - logit(no adapter)| = {d:.4f}")
    runs = {None: None, **{n: a for n, (a, _) in adapters.items()}}
    for name, adir in runs.items():
        ref = torch_reference(Path(args.model), adir, ids, args.new)
        agree_seq = agree_first = 0
        cos, maxdiff = [], []
        acc_og = acc_torch = 0
        for p, (rtoks, rfirst), ans in zip(ids, ref, answers):
            otoks, ofirst = base.greedy(p, args.new, name)
            if ans is not None:
                dec = lambda t: base.tok.decode([x for x in t if x != eos]).strip()
                acc_og += dec(otoks).startswith(ans)
                acc_torch += dec(rtoks).startswith(ans)
            agree_seq += _strip_eos(otoks, eos) == _strip_eos(rtoks, eos)
            agree_first += int(np.argmax(ofirst)) == int(np.argmax(rfirst))
            cos.append(_cos(ofirst, rfirst))
            maxdiff.append(float(np.abs(ofirst - rfirst).max()))
        report[name or "(no adapter)"] = {"vs torch": {"greedy seq equal": f"{agree_seq}/{len(ids)}",
                                                       "first argmax equal": f"{agree_first}/{len(ids)}",
                                                       "min cos": round(min(cos), 5),
                                                       "max abs diff": float("%.3g" % max(maxdiff))}}
        if answers[0] is not None:
            report[name or "(no adapter)"]["accuracy og / torch"] = f"{acc_og}/{len(ids)} / {acc_torch}/{len(ids)}"
    # vs the baked-in build (same int4 base weights, adapter as initializers) and the plain base
    others = {}
    for spec in args.baked or []:
        name, d = spec.split("=", 1)
        others[name] = d
    if args.plain:
        others[None] = args.plain
    for name, d in others.items():
        m = Served(Path(d))
        eq, md, acc = 0, [], 0
        for p, ans in zip(ids, answers):
            t1, f1 = base.greedy(p, args.new, name)
            t2, f2 = m.greedy(p, args.new, None)
            eq += t1 == t2
            md.append(float(np.abs(f1 - f2).max()))
            if ans is not None:
                acc += m.tok.decode([x for x in t2 if x != eos]).strip().startswith(ans)
        report[name or "(no adapter)"]["vs " + ("baked" if name else "plain int4 base")] = {
            "greedy seq equal": f"{eq}/{len(ids)}", "max abs logit diff": max(md),
            **({"its accuracy": f"{acc}/{len(ids)}"} if answers[0] is not None else {})}
        del m
    print(json.dumps(report, indent=1))


# ---------------------------------------------------------------- benchmarks
def _decode_rate(s: Served, ids: list[int], adapter: str | None, new: int, reps: int) -> float:
    rates = []
    for _ in range(reps):
        g = s.generator(len(ids) + new, adapter, min_length=len(ids) + new)
        g.append_tokens(ids)
        t = time.perf_counter()
        n = 0
        while not g.is_done():
            g.generate_next_token()
            n += 1
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def bench_adapters(args) -> None:
    r0 = rss_mb()
    t = time.perf_counter()
    s = Served(Path(args.base))
    t_base = time.perf_counter() - t
    r_base = rss_mb()
    loads = [s.load(Path(f), f"a{i}") for i, f in enumerate(args.files)]
    r_ads = rss_mb()
    ids = list(map(int, s.tok.encode(args.prompt)))
    # switch: a fresh generator with the other adapter active, prompt appended, first token out
    sw = {n: [] for n in (None, "a0", "a1")}
    for _ in range(args.reps):
        for n in sw:
            t = time.perf_counter()
            g = s.generator(len(ids) + 1, n)
            g.append_tokens(ids)
            g.generate_next_token()
            sw[n].append(time.perf_counter() - t)
    rates = {str(n): round(_decode_rate(s, ids, n, args.new, args.reps), 1) for n in (None, "a0", "a1")}
    print(json.dumps({"rss_mb": {"start": round(r0), "after base": round(r_base), "after 2 adapters": round(r_ads),
                                 "after decoding": round(rss_mb())},
                      "base load s": round(t_base, 3), "adapter load ms": [round(x * 1000, 2) for x in loads],
                      "new generator + set_active_adapter + prefill + 1 token ms (median)":
                          {str(n): round(statistics.median(v) * 1000, 2) for n, v in sw.items()},
                      "decode tokens/s (median)": rates}, indent=1))


def bench_baked(args) -> None:
    r0 = rss_mb()
    served, t = [], time.perf_counter()
    for d in args.dirs:
        served.append(Served(Path(d)))
    t_load = time.perf_counter() - t
    r1 = rss_mb()
    ids = list(map(int, served[0].tok.encode(args.prompt)))
    rates = [round(_decode_rate(s, ids, None, args.new, args.reps), 1) for s in served]
    print(json.dumps({"rss_mb": {"start": round(r0), "after models": round(r1), "after decoding": round(rss_mb())},
                      "models load s": round(t_load, 3), "decode tokens/s (median)": rates}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("base"); p.add_argument("model"); p.add_argument("out"); p.add_argument("--rank", type=int, default=1)
    p.add_argument("--precision", default="int4"); p.add_argument("--shared-rank-dim", action="store_true")
    p.add_argument("--modules", help="comma-separated peft module names for the slots (default: all Linears)")
    p = sub.add_parser("baked"); p.add_argument("model"); p.add_argument("adapter"); p.add_argument("out")
    p = sub.add_parser("plain"); p.add_argument("model"); p.add_argument("out")
    p = sub.add_parser("convert"); p.add_argument("adapter"); p.add_argument("base"); p.add_argument("out")
    p = sub.add_parser("info"); p.add_argument("file")
    p = sub.add_parser("check"); p.add_argument("model"); p.add_argument("base")
    p.add_argument("--adapter", action="append", default=[]); p.add_argument("--baked", action="append")
    p.add_argument("--plain"); p.add_argument("--prompts"); p.add_argument("--new", type=int, default=12)
    for name in ("bench-adapters", "bench-baked"):
        p = sub.add_parser(name)
        if name == "bench-adapters":
            p.add_argument("base"); p.add_argument("files", nargs=2)
        else:
            p.add_argument("dirs", nargs=2)
        p.add_argument("--new", type=int, default=64); p.add_argument("--reps", type=int, default=5)
        p.add_argument("--prompt", default="### Text: I love this so much\n### The tone is:\n")
    a = ap.parse_args()
    t = time.perf_counter()
    if a.cmd == "base":
        build_base(Path(a.model), Path(a.out), r=a.rank, precision=a.precision, unique_rank=not a.shared_rank_dim,
                   modules=a.modules.split(",") if a.modules else None)
    elif a.cmd == "baked":
        _int4_build(Path(a.model), Path(a.out), Path(a.adapter))
    elif a.cmd == "plain":
        _int4_build(Path(a.model), Path(a.out), None)
    elif a.cmd == "convert":
        print(json.dumps(convert(Path(a.adapter), Path(a.base), Path(a.out))))
    elif a.cmd == "info":
        print(json.dumps(read_adapter(Path(a.file))))
    elif a.cmd == "check":
        check(a)
    elif a.cmd == "bench-adapters":
        bench_adapters(a)
    elif a.cmd == "bench-baked":
        bench_baked(a)
    print(f"[{a.cmd}] {time.perf_counter() - t:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
