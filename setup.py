"""Package layout: the design card's top-level folders installed under the ``dettool`` namespace.

``trainer/`` -> ``dettool.trainer``, ``exporters/`` -> ``dettool.exporters``,
``runtime/`` -> ``dettool.runtime``. No bare ``trainer`` or ``runtime`` package is ever
installed (unrelated PyPI projects own those names). Metadata lives in pyproject.toml.
"""
from setuptools import find_packages, setup

FOLDERS = {"dettool": "dettool", "dettool.trainer": "trainer",
           "dettool.exporters": "exporters", "dettool.runtime": "runtime"}

packages, package_dir = [], {}
for name, folder in FOLDERS.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages, package_dir=package_dir)
