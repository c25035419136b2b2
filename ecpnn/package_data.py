"""Files the packages read at run time, found through `importlib.resources`.

Every such file is listed under ``[tool.setuptools.package-data]`` in ``pyproject.toml`` so the
wheel and the sdist carry it; looking it up here rather than beside ``__file__`` works from any
installation. A file that is not there means a damaged installation: `package_file` says so,
naming the file, and a command-line ``main`` wrapped in `reports_damaged_install` prints that one
line instead of a traceback.
"""

import functools
import importlib.resources
import sys

__all__ = ["MissingPackageData", "package_file", "reports_damaged_install"]


class MissingPackageData(FileNotFoundError):
    """A file the installed packages need is missing: the installation is damaged."""


def package_file(package, name):
    """The `importlib.resources` traversable of file `name` shipped in `package` (dotted)."""
    location = importlib.resources.files(package)
    resource = location / name
    if not resource.is_file():
        raise MissingPackageData(
            f"{package.replace('.', '/')}/{name} is missing from the installed ecpnn package "
            f"({location}); the installation is damaged: reinstall it with "
            f"`pip install --force-reinstall ecpnn` (or restore the file in a checkout).")
    return resource


def reports_damaged_install(main):
    """Wrap a command-line `main`: a missing package-data file ends it with its one-line message
    on stderr and exit status 1."""
    @functools.wraps(main)
    def guarded_main(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except MissingPackageData as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return guarded_main
