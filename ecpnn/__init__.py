"""The distribution's own package: its version, and the lookup of the files it ships beside the
code (package data).

`__version__` is the one version source: ``pyproject.toml`` reads it for the package metadata and
``python -m hw.build --version`` prints it.
"""

__version__ = "0.1.0"
