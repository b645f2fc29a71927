"""exo2ego-edge: train an Exo2Ego egocentric video MLLM, export it, run it on the edge.

Layers (DESIGN.md): this core package holds config, model, tokenizer/prompt, bundle format and
the CLI; ``exo2ego_edge.train``, ``exo2ego_edge.export`` and ``exo2ego_edge.runtime`` build on it.
Nothing here imports torch at package import time, so the runtime stays torch-free.
"""

__version__ = "0.1.0"
