"""``python -m sw.run MODEL``: a quantized model file on the accelerator in one command (see
`sw.run.__main__`): `sw.run.model_file` reads the model and its inputs, `sw.run.compare` runs
the model's own runtime beside the device, `sw.run.supported` lists the supported ops."""
