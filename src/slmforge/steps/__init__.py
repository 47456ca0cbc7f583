"""The pipeline steps: one module each, run as `python -m slmforge.steps.<name> ...`.

Each module has a `Params` dataclass (its parameters, declared once with `slmforge.contract.params.param`),
`run(**given)` doing the work and `main(argv)` parsing the argv that its `components/<name>.yml`
command renders (option names are the component's input/output names; tests/test_params.py keeps
the YAML equal to Params).

The folders the steps exchange (dataset, adapter, model, metrics) are read and written only through
slmforge.contract.folders: their file names, line shapes and manifest keys, and the training template
(`params.text_template`, carried forward with `folders.template_param`, read by `folders.carried_template`).
"""
