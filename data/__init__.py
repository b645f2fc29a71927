"""The data layer: simulated and real Ego-Exo4D worlds -> Ego-ExoClip pairs and instructions.

- ``simulator`` + ``sim_render``: the built-in tabletop world, written in the Ego-Exo4D layout;
- ``egoexo4d``: the Ego-Exo4D reader (takes, atomic descriptions, videos);
- ``clips``: Ego-ExoClip pairs and the EgoIT-style instruction rows (``data build-clips``);
- ``instructions``: questions and answers generated from atomic descriptions;
- ``video_cache``: decoded clip frames cached on disk for training and scoring.

numpy and PyAV only: no torch, so a device install can build benchmark suites from a world.
"""
