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
from dataclasses import asdict, dataclass
from pathlib import Path

from slmforge.contract import folders, manifest, progress
from slmforge.contract.step import StepSpec
from slmforge.contract.params import make, param
from slmforge.errors import InvalidInput
from slmforge.steps._cli import run_step
from slmforge.training import checkpoint, tracking
from slmforge.training.args import TrainArgs
from slmforge.training.data import read_dataset
from slmforge.training.loop import Dist, eval_examples, train
from slmforge.training.methods import METHODS, TORCH_DTYPES, AdapterSpec, own_params
from slmforge.training.model import base_model_name, load_model

# Parameters that do not change the trained weights: a checkpoint made under other values still resumes.
_NOT_IN_FINGERPRINT = {"logging_steps", "save_steps", "eval_strategy", "eval_steps", "per_device_eval_batch_size",
                       "save_total_limit", "max_eval_samples"}
_FOLDERS = ("model", "model_id", "dataset", "adapter", "checkpoints")  # where, not how: not in the params


@dataclass(kw_only=True)
class Params(TrainArgs):
    """Fine-tune (LoRA family)

    LoRA-family fine-tuning with peft (bitsandbytes 4-bit for QLoRA); checkpoints every save_steps and
    resumes from the latest one; runs under torchrun for multi-process training.
    """

    model: str | None = param(None, asset="uri_folder", help="base model folder (Hugging Face format)")
    model_id: str | None = param(None, help="hub id of the base model, when no folder is given")
    dataset: str = param(asset="uri_folder", help="output of load_data")
    method: str = param("lora", choices=tuple(METHODS), help="the LoRA-family method")
    target_modules: str | None = param(None, help="comma-separated module names (default all projections)")
    r: int = param(64, ge=1, help="adapter rank")
    alpha: float = param(16, gt=0, help="adapter alpha")
    lora_dropout: float = param(0.05, ge=0, lt=1, help="LoRA / QLoRA / DoRA dropout")
    quant_type: str = param("nf4", choices=("nf4", "fp4"), help="QLoRA 4-bit type")
    double_quant: bool = param(True, help="QLoRA: quantize the quantization constants")
    compute_dtype: str = param("float32", choices=TORCH_DTYPES, help="QLoRA compute dtype")
    torch_dtype: str = param("float32", choices=TORCH_DTYPES, help="dtype the base model is loaded in (the adapter "
                             "stays float32, as peft keeps it); slmforge's default is float32, not Olive's bfloat16 "
                             "(README: bf16 is slower on a CPU without AMX)")
    rank_dropout: float = param(0.0, ge=0, lt=1, help="LoHa / LoKr: drop rank components while training")
    module_dropout: float = param(0.0, ge=0, lt=1,
                                  help="LoHa / LoKr: skip a whole adapted module while training")
    decompose_both: bool = param(False, help="LoKr: low-rank decompose the left Kronecker factor too")
    decompose_factor: int = param(-1, ge=-1, help="LoKr: the Kronecker factorisation's split (-1: near square)")
    adapter: str = param(asset="uri_folder", output=True, help="PEFT adapter folder to write")
    checkpoints: str | None = param(None, asset="uri_folder", output=True,
                                    help="checkpoint folder (resumes from its newest matching checkpoint)")

    def check(self) -> None:
        # every method's value rules (LoKr's decompose_factor): the step holds all methods' parameters
        rules = (rule(getattr(self, n)) for m in METHODS.values() for n, rule in m.rules.items())
        problem = next(filter(None, rules), None) or self.check_args()
        if problem:
            raise InvalidInput(problem)
        half = "bfloat16" if self.bf16 else "float16" if self.fp16 else None
        if half and METHODS[self.method].autocasts and self.compute_dtype not in ("float32", half):
            raise InvalidInput(f"compute_dtype {self.compute_dtype} and {'bf16' if self.bf16 else 'fp16'} ask for "
                               "two autocast dtypes; give one")

    def autocast_dtype(self) -> str | None:
        """The dtype the forward runs under: bf16 / fp16, or (as before them) a LoRA compute_dtype."""
        if self.bf16 or self.fp16:
            return "bfloat16" if self.bf16 else "float16"
        return self.compute_dtype if METHODS[self.method].autocasts and self.compute_dtype != "float32" else None


SPEC = StepSpec("finetune", Params, version="2", environment="gpu", distributable=True, model_kind="adapter",
                work_outputs=("checkpoints",))


def adapter_spec(p: Params) -> AdapterSpec:
    """The adapter the parameters describe: the shared ones and the method's own (its registry entry's)."""
    modules = [m.strip() for m in p.target_modules.split(",") if m.strip()] if p.target_modules else None
    return AdapterSpec(method=p.method, r=p.r, alpha=p.alpha, dropout=p.lora_dropout, target_modules=modules,
                       torch_dtype=p.torch_dtype, gradient_checkpointing=p.gradient_checkpointing,
                       options={n: getattr(p, n) for n in METHODS[p.method].params})


def run(*, progress: bool = True, **given) -> dict | None:
    """Fine-tune and write the adapter folder (`given`: Params' names); returns its manifest (None on
    ranks other than 0). `progress`: print a progress line on stderr."""
    started = time.perf_counter()
    p = make(Params, given)  # before the heavy imports: a bad value costs nothing
    import torch

    dataset, adapter, checkpoints, model, model_id = p.dataset, p.adapter, p.checkpoints, p.model, p.model_id
    spec = adapter_spec(p)
    data = read_dataset(dataset)
    dist, owns_group = _init_distributed()
    threads = torch.get_num_threads()
    if dist.device == "cpu":  # OMP_NUM_THREADS when set, else the cores shared among this machine's ranks
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))
        wanted = os.environ.get("OMP_NUM_THREADS", "")
        torch.set_num_threads(int(wanted) if wanted.isdigit() and int(wanted) > 0
                              else max(1, len(os.sched_getaffinity(0)) // local))
    try:
        peft_model = load_model(model, model_id, spec, dist.device, p.seed)
        params = _recorded_params(p)
        data_digest = (data.manifest.get("outputs_digest") or manifest.digest_path(dataset))
        model_print = checkpoint.model_fingerprint(model, model_id)
        run_print = checkpoint.fingerprint(
            params={k: v for k, v in params.items() if k not in _NOT_IN_FINGERPRINT},
            dataset=data_digest, model=model_print, world=dist.world)
        scored = len(eval_examples(data.eval, p))
        if dist.rank == 0 and scored < len(data.eval):
            print(f"finetune: the eval loss is computed over the first {scored} of {len(data.eval)} held-out "
                  f"sequences (max_eval_samples {p.max_eval_samples})", file=sys.stderr, flush=True)
        autocast = getattr(torch, p.autocast_dtype()) if p.autocast_dtype() else None
        job = tracking.JobLogger() if dist.rank == 0 and tracking.JobLogger.wanted() else None
        printer = _progress_printer(job, shown=progress) if (progress or job) and dist.rank == 0 else None
        result = train(peft_model, data, p, dist, checkpoints=Path(checkpoints) if checkpoints else None,
                       run_fingerprint=run_print, autocast_dtype=autocast, progress=printer)
        if dist.rank != 0:
            dist.barrier()  # leave together with rank 0, once its adapter is written (below)
            return None
        base_name = base_model_name(model, model_id)
        peft_model.peft_config["default"].base_model_name_or_path = base_name
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        metrics = {
            "loss_history": result.loss_history, "eval_history": result.eval_history,
            "eval_loss": result.eval_loss, "final_loss": result.loss_history[-1]["loss"],
            "eval_sequences": scored, "eval_sequences_held_out": len(data.eval),
            "tokens_per_second": round(result.tokens_per_second, 1), "tokens": result.tokens,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "train_seconds": round(result.train_seconds, 3), "steps": result.steps,
            "epochs": round(result.epochs, 4), "resumed_from_step": result.resumed_from,
            "trainable_params": trainable, "world_size": dist.world,
        }
        if p.load_best_model_at_end:  # the adapter written is this step's
            metrics["best_step"], metrics["best_eval_loss"] = result.best_step, result.best_metric
        if torch.cuda.is_available():
            metrics["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        run_id = job.finish(params, metrics, result.eval_history) if job is not None else None
        data_params = data.manifest.get("params", {})
        with manifest.atomic_output(adapter) as out:
            config = peft_model.peft_config["default"]
            if isinstance(config.target_modules, (set, frozenset)):
                config.target_modules = sorted(config.target_modules)  # a set: random order, random bytes
            # save_embedding_layers=False: "auto" looks the base name up on the hub to compare vocabularies.
            peft_model.save_pretrained(out, save_embedding_layers=False)
            (out / "README.md").unlink(missing_ok=True)  # peft's model card stub: nothing of ours in it
            metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
            written = manifest.write_manifest(
                out, step="finetune", params={**params, **folders.template_param(folders.carried_template(dataset))},
                metrics=metrics, seconds=time.perf_counter() - started,
                libraries=("torch", "transformers", "peft", "bitsandbytes"),
                extra={"inputs": {"dataset": {"path": str(dataset), "digest": data_digest},
                                  "model": {"path": str(model or model_id), "fingerprint": model_print}},
                       "base_model": base_name, "mlflow_run_id": run_id,
                       **{k: data_params.get(k) for k in ("text_cols", "loss_on")}},
            )
        # Every rank destroys the group at the same point: a rank that tore its group down and exited while
        # rank 0 still wrote aborted in gloo's teardown ("terminate called without an active exception", once
        # in a full test run). Only on success: after a failure the other ranks may never reach it.
        dist.barrier()
        return written
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            import torch.distributed

            torch.distributed.destroy_process_group()


def _recorded_params(p: Params) -> dict:
    """How it was trained (the manifest's, MLflow's and the checkpoint fingerprint's params): a method's
    own parameters (beyond the registry's SHARED) only for the methods that read them."""
    skip = set(_FOLDERS) | set(own_params()) - set(METHODS[p.method].params)
    return {k: v for k, v in asdict(p).items() if k not in skip}


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


def _progress_printer(job: tracking.JobLogger | None = None, shown: bool = True):
    """Per logged step: a progress event with the loss, tokens/s and ETA (the local display and `slmforge
    logs` show it), the same as a line on stderr (one updating line on a terminal), and inside a tracked
    job the loss, learning rate and tokens/s into its MLflow run."""
    tty = sys.stderr.isatty()

    def show(step: int, total: int, loss: float, tokens_per_s: float, eta_s: float,
             learning_rate: float | None = None) -> None:
        if job is not None:
            job.step(step, loss, learning_rate, tokens_per_s)
        if not shown:
            return
        progress.emit(step, total, "steps", loss=loss, tokens_per_second=tokens_per_s, eta_seconds=eta_s)
        line = (f"finetune: step {step}/{total}  loss {loss:.4f}  {tokens_per_s:,.0f} tokens/s  "
                f"ETA {progress.fmt_eta(eta_s)}")
        if tty:
            print("\r" + line, end="\n" if step == total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    # torchrun's own parser rejects `--r` (a prefix of several of its options), so under
    # torchrun the step's arguments follow a `--`, which torchrun passes on: drop it.
    given = given[1:] if given[:1] == ["--"] else given

    def work(values: dict) -> None:
        m = run(**values)
        if m is not None:
            c = m["metrics"]
            print(f"finetune: {c['steps']} steps, final loss {c['final_loss']:.4f}, eval loss {c['eval_loss']}, "
                  f"{c['tokens_per_second']:,.0f} tokens/s -> {values['adapter']}", file=sys.stderr)

    return run_step("finetune", Params, given, work, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
