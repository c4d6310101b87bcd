"""Run-time control of a generated accelerator under a power cap (issue 11, after BatchDVFS).

* :mod:`.device`: the small interface every controller sees (set batch, set frequency level,
  read power, run a control period) and the report of a period.
* :mod:`.model_device`: a table-driven device: throughput from the GEMM engine's cycle model
  (equal to Verilator per batch), power from :mod:`.power_model`.
* :mod:`.power_model`: static + per-resource-class activity x energy x frequency; activity
  measured in Verilator (``activity_default.json``, ``python -m verif.measure_activity``), the
  per-toggle energies assumptions (a WHAT-IF).
* :mod:`.gpu_device`: the same interface over PyTorch on an NVIDIA GPU, power read through NVML;
  it never touches clocks or power limits.
* :mod:`.controllers`: BatchDVFS, BOBD (Bayesian optimisation with scikit-optimize), the
  frequency-only and Clipper AIMD baselines, and the table oracle.
* :mod:`.serve`: arrivals, cap traces, the serving simulation, its summary and plots
  (``python -m gen serve-sim``).

docs/runtime.md describes all of it.
"""
