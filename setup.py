"""Build mirror's optional compiled core; where it cannot be built, mirror installs and runs pure Python."""
from setuptools import Extension, setup

# optional: a machine without a C compiler (or without Python's headers) still installs mirror
setup(ext_modules=[Extension("mirror._core", ["mirror/_core.c"], optional=True)])
