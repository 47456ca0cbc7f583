"""The pipeline steps: one module each, run as `python -m slmforge.steps.<name> ...`.

Each module has a `Params` dataclass (its parameters, declared once with `slmforge.contract.params.param`),
`run(**given)` doing the work and `main(argv)` parsing the argv that its `components/<name>.yml`
command renders (option names are the component's input/output names; tests/test_params.py keeps
the YAML equal to Params).

Folder formats the steps exchange (see CONTRIBUTING.md for the full contract):
- dataset (load_data): train.jsonl / eval.jsonl with {"input_ids", "labels"[, "attention_mask"]}
  per line (labels -100 where masked); eval_rows.jsonl with the held-out raw rows; the manifest's
  params carry text_template, text_cols, loss_on, strategy, max_seq_len.
- adapter (finetune): PEFT folder; manifest metrics carry loss_history [{step, loss}], eval_loss,
  tokens_per_second, peak_rss_mb, train_seconds.
- model (merge): Hugging Face folder with tokenizer. model (build_onnx): onnxruntime-genai folder.
  Both manifests carry the training text_template forward.
- metrics (evaluate): metrics.json {label, accuracy, n, confusion, perplexity, tokens_per_second,
  size_bytes, model_kind}.
"""
