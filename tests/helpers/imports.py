"""Child interpreters in which some packages cannot be imported: what a device or a layer lacks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def import_blocker(blocked: Iterable[str], why: str) -> str:
    """Python source that makes importing any of ``blocked`` (packages or dotted modules, with
    everything under them) raise ImportError saying ``why``: for ``python -c`` or a sitecustomize."""
    return f"""
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in {tuple(blocked)!r}):
            raise ImportError(f"{{name}} {why}")
sys.meta_path.insert(0, _Block())
"""


def blocking_site(folder: Path, blocked: Iterable[str], why: str) -> Path:
    """A folder whose sitecustomize.py blocks ``blocked``: put it on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(import_blocker(blocked, why))
    return folder
