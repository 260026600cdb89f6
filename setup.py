"""Package discovery (the rest of the metadata is in pyproject.toml).

pyproject's declarative `find` cannot add a package that lives outside the package folder, and
the presets live in models/ at the top of the repository (shipped as `edge_specens.models`).
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["edge_specens", "edge_specens.*"]) + ["edge_specens.models"])
