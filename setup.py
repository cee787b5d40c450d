"""Metadata lives in setup.cfg; this file adds the optional C speedups.

The extension is the frame reader of the lean engine (header checks, size
limits, unmasking, UTF-8 of uncompressed text; see geventws/protocol/reader.py)
and the one-frame encoder of outgoing messages.  Where it cannot be compiled,
the install goes on without it and geventws uses its pure Python fallback.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("geventws.protocol._speedups", ["geventws/protocol/_speedups.c"], optional=True)])
