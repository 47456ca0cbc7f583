"""finetune step: LoRA, QLoRA, DoRA, LoHa or LoKr on a load_data dataset folder; writes a PEFT adapter folder.

    python -m slmforge.steps.finetune --model DIR --dataset DS --adapter OUT --checkpoints CK [...]
    torchrun --nproc_per_node N -m slmforge.steps.finetune -- ...   (DDP: gloo on CPU, nccl on GPU)

The same seed gives the same adapter bytes and losses. A checkpoint is written every save_steps
into --checkpoints; started again after a kill, the step resumes from the newest one that matches
its parameters and inputs and ends with the adapter an uninterrupted run would have written.
Only rank 0 writes the adapter; the training loop is training/loop.py.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from slmforge import manifest
from slmforge.errors import InvalidInput
from slmforge.steps._cli import StepArgumentParser, parse_bool, run_main
from slmforge.training import checkpoint, tracking
from slmforge.training.data import read_dataset
from slmforge.training.loop import Dist, TrainArgs, train
from slmforge.training.model import DTYPES, METHODS, LoraSpec, base_model_name, load_model

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
OPTIMIZERS = ("adamw_torch", "adamw_hf", "adamw_torch_fused", "paged_adamw_32bit", "paged_adamw_8bit",
              "adamw_8bit", "sgd")
# Parameters that do not change the trained weights: a checkpoint made under other values still resumes.
_NOT_IN_FINGERPRINT = {"logging_steps", "save_steps", "eval_strategy", "eval_steps", "per_device_eval_batch_size"}


def run(*, dataset: str | Path, adapter: str | Path, checkpoints: str | Path | None = None,
        model: str | Path | None = None, model_id: str | None = None, method: str = "lora",
        target_modules: str | None = None, r: int = 64, alpha: float = 16, lora_dropout: float = 0.05,
        quant_type: str = "nf4", double_quant: bool = True, compute_dtype: str = "float32",
        gradient_checkpointing: bool = False, rank_dropout: float = 0.0, module_dropout: float = 0.0,
        decompose_both: bool = False, decompose_factor: int = -1, progress: bool = True,
        **training_args) -> dict | None:
    """Fine-tune and write the adapter folder; returns its manifest (None on ranks other than 0)."""
    import torch

    started = time.perf_counter()
    unknown = sorted(set(training_args) - {f.name for f in fields(TrainArgs)})
    if unknown:
        raise InvalidInput(f"unknown training argument '{unknown[0]}'")
    args = TrainArgs(**training_args)
    modules = [m.strip() for m in target_modules.split(",") if m.strip()] if target_modules else None
    spec = LoraSpec(method=method, r=r, alpha=alpha, dropout=lora_dropout, target_modules=modules,
                    quant_type=quant_type, double_quant=double_quant, compute_dtype=compute_dtype,
                    gradient_checkpointing=gradient_checkpointing, rank_dropout=rank_dropout,
                    module_dropout=module_dropout, decompose_both=decompose_both, decompose_factor=decompose_factor)
    _check(spec, args)
    data = read_dataset(dataset)
    dist, owns_group = _init_distributed()
    threads = torch.get_num_threads()
    if dist.device == "cpu":  # OMP_NUM_THREADS when set, else the cores shared among this machine's ranks
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))
        wanted = os.environ.get("OMP_NUM_THREADS", "")
        torch.set_num_threads(int(wanted) if wanted.isdigit() and int(wanted) > 0
                              else max(1, len(os.sched_getaffinity(0)) // local))
    try:
        peft_model = load_model(model, model_id, spec, dist.device, args.seed)
        params = dict(method=method, target_modules=target_modules, r=r, alpha=alpha, lora_dropout=lora_dropout,
                      quant_type=quant_type, double_quant=double_quant, compute_dtype=compute_dtype,
                      gradient_checkpointing=gradient_checkpointing, **_family_params(spec), **asdict(args))
        data_digest = (data.manifest.get("outputs_digest") or manifest.digest_path(dataset))
        model_print = checkpoint.model_fingerprint(model, model_id)
        run_print = checkpoint.fingerprint(
            params={k: v for k, v in params.items() if k not in _NOT_IN_FINGERPRINT},
            dataset=data_digest, model=model_print, world=dist.world)
        autocast = getattr(torch, compute_dtype) if method == "lora" and compute_dtype != "float32" else None
        result = train(peft_model, data, args, dist, checkpoints=Path(checkpoints) if checkpoints else None,
                       run_fingerprint=run_print, autocast_dtype=autocast,
                       progress=_progress_printer() if progress and dist.rank == 0 else None)
        if dist.rank != 0:
            return None
        base_name = base_model_name(model, model_id)
        peft_model.peft_config["default"].base_model_name_or_path = base_name
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        metrics = {
            "loss_history": result.loss_history, "eval_history": result.eval_history,
            "eval_loss": result.eval_loss, "final_loss": result.loss_history[-1]["loss"],
            "tokens_per_second": round(result.tokens_per_second, 1), "tokens": result.tokens,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "train_seconds": round(result.train_seconds, 3), "steps": result.steps,
            "epochs": round(result.epochs, 4), "resumed_from_step": result.resumed_from,
            "trainable_params": trainable, "world_size": dist.world,
        }
        if torch.cuda.is_available():
            metrics["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        run_id = tracking.log_run(params, {k: v for k, v in metrics.items() if not isinstance(v, list)},
                                  result.loss_history, result.eval_history)
        data_params = data.manifest.get("params", {})
        with manifest.atomic_output(adapter) as out:
            config = peft_model.peft_config["default"]
            if isinstance(config.target_modules, (set, frozenset)):
                config.target_modules = sorted(config.target_modules)  # a set: random order, random bytes
            # save_embedding_layers=False: "auto" looks the base name up on the hub to compare vocabularies.
            peft_model.save_pretrained(out, save_embedding_layers=False)
            (out / "README.md").unlink(missing_ok=True)  # peft's model card stub: nothing of ours in it
            metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
            return manifest.write_manifest(
                out, step="finetune", params=params, metrics=metrics, seconds=time.perf_counter() - started,
                libraries=("torch", "transformers", "peft", "bitsandbytes"),
                extra={"inputs": {"dataset": {"path": str(dataset), "digest": data_digest},
                                  "model": {"path": str(model or model_id), "fingerprint": model_print}},
                       "base_model": base_name, "mlflow_run_id": run_id,
                       **{k: data_params.get(k) for k in ("text_template", "text_cols", "loss_on")}},
            )
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            import torch.distributed

            torch.distributed.destroy_process_group()


def _family_params(spec: LoraSpec) -> dict:
    """The method-specific parameters, only for the methods that have them (LoRA's params are unchanged)."""
    if spec.method in ("loha", "lokr"):
        extra = {"rank_dropout": spec.rank_dropout, "module_dropout": spec.module_dropout}
        if spec.method == "lokr":
            extra.update(decompose_both=spec.decompose_both, decompose_factor=spec.decompose_factor)
        return extra
    return {}


def _check(spec: LoraSpec, args: TrainArgs) -> None:
    checks = [
        (spec.method in METHODS, f"method '{spec.method}' is not one of {', '.join(METHODS)}"),
        (0 <= spec.rank_dropout < 1 and 0 <= spec.module_dropout < 1,
         "rank_dropout and module_dropout must be in [0, 1)"),
        (spec.decompose_factor == -1 or spec.decompose_factor >= 1, "decompose_factor must be -1 or at least 1"),
        (spec.quant_type in ("nf4", "fp4"), f"quant_type '{spec.quant_type}' is not one of nf4, fp4"),
        (spec.compute_dtype in DTYPES, f"compute_dtype '{spec.compute_dtype}' is not one of {', '.join(DTYPES)}"),
        (spec.r >= 1, f"r must be at least 1, got {spec.r}"),
        (0 <= spec.dropout < 1, f"lora_dropout must be in [0, 1), got {spec.dropout}"),
        (args.lr_scheduler_type in SCHEDULERS, f"lr_scheduler_type '{args.lr_scheduler_type}' is not one of "
                                               f"{', '.join(SCHEDULERS)}"),
        (args.optim in OPTIMIZERS, f"optim '{args.optim}' is not one of {', '.join(OPTIMIZERS)}"),
        (args.eval_strategy in ("no", "steps", "epoch"), f"eval_strategy '{args.eval_strategy}' is not one of "
                                                         "no, steps, epoch"),
        (args.learning_rate > 0, f"learning_rate must be above 0, got {args.learning_rate}"),
        (min(args.per_device_train_batch_size, args.per_device_eval_batch_size,
             args.gradient_accumulation_steps, args.logging_steps, args.save_steps) >= 1,
         "batch sizes, gradient_accumulation_steps, logging_steps and save_steps must be at least 1"),
        (args.max_steps > 0 or args.num_train_epochs > 0, "give max_steps or num_train_epochs above 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise InvalidInput(message)


def _init_distributed() -> tuple[Dist, bool]:
    """Dist for this process; starts the process group under torchrun (gloo on CPU, nccl on GPU)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        torch.cuda.set_device(local_rank)
    if world == 1:
        return Dist(device=device), False
    import torch.distributed as tdist

    owns = not tdist.is_initialized()
    if owns:
        tdist.init_process_group(backend="nccl" if device != "cpu" else "gloo")
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size(), device=device), owns


def _progress_printer():
    """step, loss, tokens/s and ETA on stderr: one updating line on a terminal, plain lines otherwise."""
    tty = sys.stderr.isatty()

    def show(step: int, total: int, loss: float, tokens_per_s: float, eta_s: float) -> None:
        line = (f"finetune: step {step}/{total}  loss {loss:.4f}  {tokens_per_s:,.0f} tokens/s  "
                f"ETA {int(eta_s) // 60}:{int(eta_s) % 60:02d}")
        if tty:
            print("\r" + line, end="\n" if step == total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    p = StepArgumentParser(prog="python -m slmforge.steps.finetune", description=__doc__.splitlines()[0])
    p.add_argument("--model")
    p.add_argument("--model_id")
    p.add_argument("--dataset", required=True)
    p.add_argument("--method", default="lora", choices=list(METHODS))
    p.add_argument("--target_modules")
    p.add_argument("--r", type=int, default=64)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--lora_dropout", type=float, default=0.05)
    p.add_argument("--quant_type", default="nf4", choices=["nf4", "fp4"])
    p.add_argument("--double_quant", type=parse_bool, default=True)
    p.add_argument("--compute_dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--gradient_checkpointing", type=parse_bool, default=False)
    p.add_argument("--rank_dropout", type=float, default=0.0)
    p.add_argument("--module_dropout", type=float, default=0.0)
    p.add_argument("--decompose_both", type=parse_bool, default=False)
    p.add_argument("--decompose_factor", type=int, default=-1)
    for f in fields(TrainArgs):
        kind = {"int": int, "float": float, "bool": parse_bool}.get(str(f.type).split(" ")[0], str)
        p.add_argument(f"--{f.name}", type=kind, default=f.default)
    p.add_argument("--adapter", required=True)
    p.add_argument("--checkpoints")

    def body() -> None:
        given = list(sys.argv[1:] if argv is None else argv)
        # torchrun's own parser rejects `--r` (a prefix of several of its options), so under
        # torchrun the step's arguments follow a `--`, which torchrun passes on: drop it.
        args = vars(p.parse_args(given[1:] if given[:1] == ["--"] else given))
        m = run(**args)
        if m is not None:
            c = m["metrics"]
            print(f"finetune: {c['steps']} steps, final loss {c['final_loss']:.4f}, eval loss {c['eval_loss']}, "
                  f"{c['tokens_per_second']:,.0f} tokens/s -> {args['adapter']}", file=sys.stderr)

    return run_main("finetune", body)


if __name__ == "__main__":
    sys.exit(main())
