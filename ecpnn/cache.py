"""Where the tools keep what they can rebuild: one cache root for every kind of cache.

``$ECPNN_CACHE/KIND`` when ``ECPNN_CACHE`` is set, else ``$XDG_CACHE_HOME/ecpnn/KIND`` (i.e.
``~/.cache/ecpnn/KIND``): never inside the installed packages.
"""

import os
from pathlib import Path

__all__ = ["cache_directory"]


def cache_directory(kind):
    """The cache folder for `kind` (``"cxxrtl"``, ``"dse"``, ...); not created here."""
    root = os.environ.get("ECPNN_CACHE")
    if root:
        return Path(root) / kind
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "ecpnn" / kind
