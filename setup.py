"""Metadata lives in setup.cfg; this file adds the optional C speedups.

The extension only unmasks client frames.  Where it cannot be compiled, the
install goes on without it and geventws uses its pure Python fallback.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("geventws.protocol._speedups", ["geventws/protocol/_speedups.c"], optional=True)])
