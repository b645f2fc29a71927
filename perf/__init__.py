"""The performance layer: what ``exo2ego-edge bench`` measures, on a workstation or the device.

- ``harness``: warm-up, per-stage latency distributions, memory, reports (JSON, Markdown, PNG);
- ``roofline``: FLOPs and bytes per stage, and the machine's compute and bandwidth bounds;
- ``jetson``: Jetson models, tegrastats parsing and the latency projection to each module.

Imports the runtime and the core only, never torch: it ships to the device beside the runtime.
"""
