"""Timing: `benchmark` measures our train step and inference (and, with `--openstl`, OpenSTL's
PyTorch model beside it, `openstl_peer`) on the same config, batch and precision."""
