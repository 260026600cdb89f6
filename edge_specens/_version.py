"""The one version number: pyproject.toml reads it from here, the package and the server report it."""

__version__ = "0.1.0"
