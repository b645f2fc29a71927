"""The evaluation layer: benchmark questions, their scoring and the metrics.

- ``questions``: the question schema every suite is written in;
- ``egosim_bench``: EgoSim-Bench, generated from a simulated world's take records;
- ``egobench``: adapters from the eight EgoBench benchmarks' published files;
- ``scoring``: option scoring by a checkpoint (torch, imported only then) or a bundle (the runtime).
"""
