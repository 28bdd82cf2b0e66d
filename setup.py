"""Builds the optional C extension; all project metadata lives in pyproject.toml.

``goldenloop.ingest._otlp_fast`` speeds up OTLP/protobuf decoding. It is optional:
without a C compiler the build goes on without it and ``goldenloop.ingest.otlp`` uses
its pure-Python decoder.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "goldenloop.ingest._otlp_fast",
            sources=["goldenloop/ingest/_otlp_fast.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
