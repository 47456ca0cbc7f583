"""One int4 base, many adapters: two LoRA adapters for two tasks on one SmolLM2 base, served by og.Adapters.

    python bench/adapters.py [--steps 60] [--eval-rows 200] [--reps 7] [--new-tokens 32] [--fresh]

Two tasks of our own: `tone` (the demo's: src/slmforge/data/tones-*.jsonl, 4 tones) and `topic` (made
here, deterministically: sentences about sport, food, weather or travel; the held-out rows use other
subjects and other sentence frames than the training rows). Each is fine-tuned with slmforge's
load_data + finetune steps at the demo recipe's settings (LoRA r16 alpha32 on q/v/o, loss on the answer,
batch 8, lr 5e-4, 60 steps), merged (merge step), built into its own int4 model with the adapter baked in
(build_onnx --adapter: today's path) and converted (onnx_adapter.convert) for ONE int4 base built with
build_onnx --adapter_slots all. Held-out accuracy comes from slmforge's evaluate code (models/evaluation.py,
greedy, max 4 new tokens) for the merged PyTorch model, the baked-in build and the base + adapter served
through og.Adapters, both adapters loaded in one process (GenaiModel(base, adapters=[...]) + use_adapter).
Then, each in a fresh process: one base + two adapters (RSS after loading and after answering with
each) against two baked-in models; the time to load an adapter and to switch between the two; decode
tokens/s (batch 1, EOS ignored) with no adapter, each adapter and each baked build, alternating in one
process. Writes bench/results/adapters.json; the work folder is .slmforge/bench/adapters (reused
unless --fresh: delete it for stage timings of a cold run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

WORK = harness.REPO / ".slmforge" / "bench" / "adapters"
DATA = harness.REPO / "src" / "slmforge" / "data"
TASKS = {
    "tone": {"template": harness.TEMPLATE, "train": DATA / "tones-train.jsonl", "heldout": DATA / "tones-heldout.jsonl"},
    "topic": {"template": "### Sentence: {sentence}\n### Topic:\n{topic}"},
}
# The demo recipe's training (pipelines/smollm2-tones.json: lora pass, source_max_len)
TRAIN = {"method": "lora", "r": 16, "alpha": 32, "lora_dropout": 0.0, "target_modules": "q_proj,v_proj,o_proj",
         "per_device_train_batch_size": 8, "learning_rate": 5e-4, "logging_steps": 10, "seed": 0}
MAX_SEQ_LEN = 64
MAX_NEW_TOKENS = 4  # the demo recipe's evaluate
TARGET = {"adapter_vs_merged_accuracy_min": 0.97}

# The topic task: (train subjects, held-out subjects) per topic, and (train, held-out) sentence frames.
SUBJECTS = {
    "sport": (["the football match", "our tennis practice", "the marathon", "the basketball final",
               "my swimming lessons", "the cycling race", "the hockey game", "the volleyball tournament",
               "the boxing bout", "the golf course"],
              ["the rugby semifinal", "the baseball season", "our badminton club", "the ski jumping contest",
               "the rowing regatta", "the cricket test match", "the table tennis league", "the wrestling championship"]),
    "food": (["the lasagna", "a bowl of ramen", "the chocolate cake", "fresh bread from the bakery",
              "the vegetable soup", "the grilled salmon", "the pancakes", "a spicy curry", "the apple pie",
              "the homemade pizza"],
             ["the mushroom risotto", "a plate of dumplings", "the lemon tart", "roast chicken with potatoes",
              "the sushi platter", "a bowl of porridge", "the beef stew", "the blueberry muffins"]),
    "weather": (["the heavy rain", "the thick fog", "the heatwave", "the snowstorm", "the strong wind",
                 "the thunderstorm", "the frost this morning", "the clear sunny sky", "the hailstorm",
                 "the humid air"],
                ["the freezing drizzle", "the blizzard", "the tropical cyclone", "the morning mist",
                 "the long dry spell", "the sleet", "the gusty breeze", "the drought"]),
    "travel": (["the flight to Rome", "our train journey", "the hotel booking", "the road trip",
                "my passport renewal", "the cruise", "the airport delay", "the hostel in Berlin",
                "the ferry crossing", "our backpacking trip"],
               ["the overnight bus to Madrid", "the boarding pass", "the visa application",
                "the camping holiday in Norway", "the layover in Dubai", "the rental car",
                "our honeymoon in Bali", "the luggage at the check-in desk"]),
}
FRAMES = (["I can't stop thinking about {s}.", "Everyone was talking about {s} today.",
           "{S} was the best part of my week.", "We had a long discussion about {s}.",
           "My brother keeps complaining about {s}.", "Honestly, {s} surprised me."],
          ["Yesterday's news was all about {s}.", "Nobody expected {s} to be like that.", "{S} made my weekend.",
           "My colleague sent me a photo of {s}.", "I wrote a short note about {s}."])


def topic_rows(split: int) -> list[dict]:
    """split 0: training rows, 1: held-out rows (other subjects, other frames); shuffled with a fixed seed."""
    rows = [{"sentence": frame.format(s=s, S=s[0].upper() + s[1:]), "topic": topic}
            for topic, subjects in SUBJECTS.items() for s in subjects[split] for frame in FRAMES[split]]
    random.Random(split).shuffle(rows)
    return rows


def stage(name: str, out: Path, make, timings: dict) -> Path:
    """Run `make()` unless `out` exists (a reused stage has no timing)."""
    if out.exists():
        print(f"-- {name}: reused {out}", flush=True)
        timings[name] = None
        return out
    print(f"-- {name}", flush=True)
    started = time.perf_counter()
    make()
    timings[name] = round(time.perf_counter() - started, 2)
    return out


def prepare(a, timings: dict) -> dict:
    """Data, fine-tunes, merges, the base with slots, the baked builds and the adapter files."""
    from slmforge.models import onnx_adapter
    from slmforge.steps import build_onnx, finetune, load_data, merge

    model = str(harness.SMOLLM2)
    paths: dict = {"base": WORK / "base", "tasks": {}}
    stage("build base (int4, adapter_slots all)", paths["base"],
          lambda: build_onnx.run(model=model, output=paths["base"], precision="int4", adapter_slots="all"), timings)
    for task, spec in TASKS.items():
        root = WORK / task
        root.mkdir(parents=True, exist_ok=True)
        train, heldout = spec.get("train"), spec.get("heldout")
        if train is None:
            train, heldout = root / "train.jsonl", root / "heldout.jsonl"
            for file, split in ((train, 0), (heldout, 1)):
                file.write_text("".join(json.dumps(r) + "\n" for r in topic_rows(split)))
        fields = spec["template"].replace("{", "}").split("}")[1::2]
        spec_file = root / "spec.json"
        spec_file.write_text(json.dumps({"text_cols": fields, "text_template": spec["template"]}))
        p = {k: root / k for k in ("dataset", "adapter", "merged", "baked")}
        p["file"] = root / f"{task}.onnx_adapter"
        stage(f"{task}: load_data", p["dataset"], lambda: load_data.run(
            data=str(train), eval_data=str(heldout), spec=spec_file, tokenizer=model, dataset=p["dataset"],
            strategy="line-by-line", loss_on="completion", max_seq_len=MAX_SEQ_LEN), timings)
        stage(f"{task}: finetune", p["adapter"], lambda: finetune.run(
            model=model, dataset=p["dataset"], adapter=p["adapter"], max_steps=a.steps, save_steps=a.steps + 1,
            progress=False, **TRAIN), timings)
        stage(f"{task}: merge", p["merged"], lambda: merge.run(model=model, adapter=p["adapter"], output=p["merged"]),
              timings)
        stage(f"{task}: baked int4 build (build_onnx --adapter)", p["baked"], lambda: build_onnx.run(
            model=model, adapter=p["adapter"], output=p["baked"], precision="int4"), timings)
        stage(f"{task}: convert to .onnx_adapter", p["file"], lambda: onnx_adapter.convert(
            p["adapter"], paths["base"], p["file"], name=task, template=spec["template"]), timings)
        paths["tasks"][task] = p
    return paths


def accuracy(paths: dict, rows: int) -> dict:
    """Held-out metrics per task: merged PyTorch, baked int4, base + adapter (both adapters in one og
    process), base alone; the evaluate step's code and settings."""
    from slmforge.contract.files import folder_size
    from slmforge.models.backend import load_backend
    from slmforge.models.eval_data import read_dataset_folder
    from slmforge.models.evaluation import evaluate
    from slmforge.models.genai import GenaiModel

    keep = ("accuracy", "n", "correct", "majority_baseline", "perplexity", "tokens_per_second",
            "rows_off_expected_answer", "confusion")
    data = {t: read_dataset_folder(p["dataset"], rows) for t, p in paths["tasks"].items()}

    def run(backend, task: str, label: str, folder=None) -> dict:
        rows_, examples, template = data[task]
        started = time.perf_counter()
        m = evaluate(backend, rows_, template, examples=examples, max_new_tokens=MAX_NEW_TOKENS, label=label,
                     model_dir=folder)
        out = {k: m[k] for k in keep} | {"seconds": round(time.perf_counter() - started, 1),
                                         "predictions": m["predictions"]}
        print(f"   {task:6} {label:22} accuracy {m['accuracy']:.3f} ({m['correct']}/{m['n']})", flush=True)
        return out

    result: dict = {t: {} for t in paths["tasks"]}
    for task, p in paths["tasks"].items():
        for label in ("merged", "baked"):
            backend = load_backend(p[label], None)
            result[task][f"{label}_pytorch" if label == "merged" else "baked_int4"] = run(backend, task, label, p[label])
            del backend
    served = GenaiModel(paths["base"], adapters=[p["file"] for p in paths["tasks"].values()])
    for task in paths["tasks"]:
        served.use_adapter(task)
        result[task]["base_plus_adapter_og"] = run(served, task, f"base + {task} adapter")
    served.use_adapter(None)
    for task in paths["tasks"]:
        result[task]["base_alone_og"] = run(served, task, "base, no adapter")
    for task, r in result.items():
        acc = {k: v["accuracy"] for k, v in r.items()}
        r["adapter_vs_merged"] = harness.ratio(acc["base_plus_adapter_og"], acc["merged_pytorch"])
        r["adapter_vs_baked"] = harness.ratio(acc["base_plus_adapter_og"], acc["baked_int4"])
        answers = {k: v.pop("predictions") for k, v in r.items() if isinstance(v, dict)}
        for other in ("merged_pytorch", "baked_int4"):
            same = sum(x == y for x, y in zip(answers["base_plus_adapter_og"], answers[other]))
            r[f"adapter_answers_equal_{other}"] = round(same / max(len(answers[other]), 1), 4)
    sizes = {"base_mb": round(folder_size(paths["base"]) / 1e6, 1),
             **{f"{t}_adapter_file_mb": round(p["file"].stat().st_size / 1e6, 2) for t, p in paths["tasks"].items()},
             **{f"{t}_baked_model_mb": round(folder_size(p["baked"]) / 1e6, 1) for t, p in paths["tasks"].items()}}
    return {"by_task": result, "sizes": sizes}


# ---- measurements in fresh processes ---------------------------------------------------------------

def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _prompt_ids(model) -> list[int]:
    row = json.loads(TASKS["tone"]["heldout"].read_text().splitlines()[0])
    return model.encode(TASKS["tone"]["template"].split("{tone}")[0].format(phrase=row["phrase"]))


def _answer(model, ids: list[int], new_tokens: int) -> None:
    list(model.stream(ids, new_tokens))


def measure_memory_adapters(base: str, files: list[str]) -> dict:
    """RSS of one base, then + each adapter, then after answering with each."""
    from slmforge.models.genai import GenaiModel

    model = GenaiModel(base)
    out = {"base_loaded_mb": _rss_mb()}
    for f in files:
        name = model.load_adapter(f)
        out[f"plus_{name}_mb"] = _rss_mb()
    ids = _prompt_ids(model)
    for name in model.adapters:
        model.use_adapter(name)
        _answer(model, ids, 8)
    out["after_answering_mb"] = _rss_mb()
    return out


def measure_memory_baked(folders: list[str]) -> dict:
    """RSS of two baked-in models, loaded one after the other in one process, then after answering."""
    from slmforge.models.genai import GenaiModel

    models, out = [], {}
    for i, folder in enumerate(folders, 1):
        models.append(GenaiModel(folder))
        out[f"models_loaded_{i}_mb"] = _rss_mb()
    for m in models:
        _answer(m, _prompt_ids(m), 8)
    out["after_answering_mb"] = _rss_mb()
    return out


def measure_speed(base: str, files: list[str], baked: dict[str, str], reps: int, new_tokens: int) -> dict:
    """Adapter load and switch times, and decode tokens/s per configuration, alternating in one process."""
    from slmforge.models.genai import GenaiModel

    import onnxruntime  # noqa: F401 - imported once by the first adapter's checks: not an adapter's cost

    started = time.perf_counter()
    served = GenaiModel(base)
    base_load = time.perf_counter() - started
    loads = {}  # the first one also creates og.Adapters for the model
    for f in files:
        t = time.perf_counter()
        name = served.load_adapter(f)  # sidecar + check against the base + og.Adapters.load
        loads[name] = round((time.perf_counter() - t) * 1000, 2)
    og, names = served._og, list(served.adapters)
    # og.Adapters.load / unload alone, a second name for the same file, repeated
    raw_load = []
    for i in range(reps):
        t = time.perf_counter()
        served._og_adapters.load(str(served.adapters[names[i % 2]].path), "again")
        raw_load.append((time.perf_counter() - t) * 1000)
        served._og_adapters.unload("again")
    bakeds = {task: GenaiModel(folder) for task, folder in baked.items()}
    ids = _prompt_ids(served)

    def generator(model, adapter: str | None):
        model.use_adapter(adapter) if model is served else None
        params = og.GeneratorParams(model.model)
        params.set_search_options(do_sample=False, min_length=len(ids) + new_tokens,
                                  max_length=len(ids) + new_tokens)
        return model._generator(params)

    def decode(model, adapter: str | None) -> dict:
        t = time.perf_counter()
        g = generator(model, adapter)
        made = time.perf_counter()
        g.append_tokens(ids)
        g.generate_next_token()
        first = time.perf_counter()
        while not g.is_done():
            g.generate_next_token()
        end = time.perf_counter()
        return {"generator_ms": (made - t) * 1000, "ttft_ms": (first - t) * 1000,
                "decode_tokens_per_second": (new_tokens - 1) / (end - first)}

    configs = {"no_adapter": (served, None), **{f"adapter_{n}": (served, n) for n in names},
               **{f"baked_{t}": (m, None) for t, m in bakeds.items()}}
    for model, adapter in configs.values():
        decode(model, adapter)  # warm-up
    runs: dict[str, list] = {c: [] for c in configs}
    order = list(configs)
    for rep in range(reps):
        for c in (order if rep % 2 == 0 else order[::-1]):
            runs[c].append(decode(*configs[c]))
    # Switching: a new generator (+ set_active_adapter) per request, the adapter alternating or always the same
    switch = {"alternating": [], "same": [], "none": []}
    for i in range(4 * reps):
        for kind, adapter in (("alternating", names[i % 2]), ("same", names[0]), ("none", None)):
            t = time.perf_counter()
            g = generator(served, adapter)
            g.append_tokens(ids)
            g.generate_next_token()
            switch[kind].append((time.perf_counter() - t) * 1000)
            del g
    med = {c: {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]} for c, rs in runs.items()}
    return {"base_load_seconds": round(base_load, 3), "adapter_load_ms": loads,
            "og_adapters_load_ms_median": round(statistics.median(raw_load), 2),
            "request_ms_median": {k: round(statistics.median(v), 2) for k, v in switch.items()},
            "decode": med, "decode_runs": {c: [round(r["decode_tokens_per_second"], 1) for r in rs]
                                           for c, rs in runs.items()},
            "new_tokens": new_tokens, "prompt_tokens": len(ids), "reps": reps}


def child(kind: str, *args: str, flags: tuple = ()) -> dict:
    """A measurement in a fresh process: its JSON line, wall time and peak RSS (VmHWM)."""
    argv = [sys.executable, __file__, *flags, "--measure", kind, *args]
    r = harness.run_measured(argv, env=harness.child_env(), timeout=1200)
    if r["rc"] != 0:
        raise SystemExit(f"measurement {kind} failed:\n{r['stdout'][-3000:]}")
    return {**harness.last_json_line(r["stdout"]), "peak_rss_mb": r["peak_rss_mb"], "wall_seconds": r["wall_seconds"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="fine-tune steps per task (the demo's 60)")
    p.add_argument("--eval-rows", type=int, default=200, help="held-out rows per task (the demo's 200)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--fresh", action="store_true", help="delete the work folder first")
    p.add_argument("--out", default=str(harness.RESULTS / "adapters.json"))
    p.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.measure:
        kind, rest = a.measure[0], a.measure[1:]
        if kind == "memory-adapters":
            out = measure_memory_adapters(rest[0], rest[1:])
        elif kind == "memory-baked":
            out = measure_memory_baked(rest)
        else:
            spec = json.loads(rest[0])
            out = measure_speed(spec["base"], spec["files"], spec["baked"], a.reps, a.new_tokens)
        print(json.dumps(out))
        return 0

    os.environ.update(harness.child_env())
    result = harness.Result("adapters", Path(a.out))
    if a.fresh and WORK.exists():
        shutil.rmtree(WORK)
    if not (harness.SMOLLM2 / "config.json").is_file():
        from slmforge.models.pretrained import write_pretrained

        write_pretrained("smollm2-135m-instruct", harness.SMOLLM2)
    timings: dict = {}
    paths = prepare(a, timings)
    print("-- accuracy", flush=True)
    t = time.perf_counter()
    acc = accuracy(paths, a.eval_rows)
    timings["accuracy"] = round(time.perf_counter() - t, 1)
    tasks = paths["tasks"]
    files = [str(p["file"]) for p in tasks.values()]
    print("-- memory, then speed (fresh processes)", flush=True)
    mem_adapters = child("memory-adapters", str(paths["base"]), *files)
    mem_baked = child("memory-baked", *(str(p["baked"]) for p in tasks.values()))
    speed = child("speed", json.dumps({"base": str(paths["base"]), "files": files,
                                       "baked": {t: str(p["baked"]) for t, p in tasks.items()}}),
                  flags=("--reps", str(a.reps), "--new-tokens", str(a.new_tokens)))
    summary = _summary(acc, mem_adapters, mem_baked, speed)
    met = {"adapter_vs_merged_accuracy": all((summary["accuracy"][t]["adapter_vs_merged"] or 0)
                                             >= TARGET["adapter_vs_merged_accuracy_min"] for t in tasks)}
    result.write(what=__doc__.split("\n\n")[1].replace("\n", " "), settings={
        "model": "SmolLM2-135M-Instruct", "train": {**TRAIN, "max_steps": a.steps, "max_seq_len": MAX_SEQ_LEN},
        "eval_rows": a.eval_rows, "max_new_tokens": MAX_NEW_TOKENS, "templates": {t: s["template"] for t, s in TASKS.items()},
        "topic_rows": {"train": len(topic_rows(0)), "heldout": len(topic_rows(1))}, "precision": "int4",
        "adapter_slots": "all"}, summary=summary, accuracy=acc, memory={"base_plus_two_adapters": mem_adapters,
        "two_baked_models": mem_baked}, speed=speed, stage_seconds=timings, target=TARGET, met=met)
    print(json.dumps(summary, indent=2))
    return 0


def _summary(acc: dict, mem_adapters: dict, mem_baked: dict, speed: dict) -> dict:
    by_task = acc["by_task"]
    decode = {c: v["decode_tokens_per_second"] for c, v in speed["decode"].items()}
    ratios = {}
    for task in by_task:
        ratios[f"adapter_{task}_vs_no_adapter"] = harness.ratio(decode[f"adapter_{task}"], decode["no_adapter"])
        ratios[f"adapter_{task}_vs_baked_{task}"] = harness.ratio(decode[f"adapter_{task}"], decode[f"baked_{task}"])
    return {
        "accuracy": {t: {"merged_pytorch": r["merged_pytorch"]["accuracy"], "baked_int4": r["baked_int4"]["accuracy"],
                         "base_plus_adapter_og": r["base_plus_adapter_og"]["accuracy"],
                         "base_alone_og": r["base_alone_og"]["accuracy"], "n": r["merged_pytorch"]["n"],
                         "adapter_vs_merged": r["adapter_vs_merged"], "adapter_vs_baked": r["adapter_vs_baked"],
                         "adapter_answers_equal_merged": r["adapter_answers_equal_merged_pytorch"],
                         "adapter_answers_equal_baked": r["adapter_answers_equal_baked_int4"]}
                     for t, r in by_task.items()},
        "size_mb": acc["sizes"],
        "adapter_load_ms": speed["adapter_load_ms"], "og_adapters_load_ms_median": speed["og_adapters_load_ms_median"],
        "request_ms_median": speed["request_ms_median"],
        "rss_mb": {"base_plus_two_adapters": mem_adapters["after_answering_mb"],
                   "two_baked_models": mem_baked["after_answering_mb"],
                   "base_plus_two_adapters_peak": mem_adapters["peak_rss_mb"],
                   "two_baked_models_peak": mem_baked["peak_rss_mb"],
                   "saved": round(mem_baked["after_answering_mb"] - mem_adapters["after_answering_mb"], 1)},
        "decode_tokens_per_second": decode, "decode_ratios": ratios,
    }


if __name__ == "__main__":
    sys.exit(main())
