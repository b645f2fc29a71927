"""What ships inside the package: a trained egosim-tiny student, its INT8 bundle, a sample clip.

They are made by ``benchmarks/ship_student.py``; PROVENANCE.md beside them says how.
"""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
SHIPPED_STUDENT = ASSETS / "egosim-tiny-student"
SHIPPED_BUNDLE = ASSETS / "egosim-tiny-int8"
SHIPPED_TOWER = ASSETS / "egosim-tiny-tower"  # made by `exo2ego-edge pretrain-tower`
SAMPLE_CLIP = ASSETS / "sample_ego.mp4"
