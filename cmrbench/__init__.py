"""CMRBench: benchmark and harness for Continual Model Routing."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cmrbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

DATASET_NAME = "CMRBench"
DATASET_VERSION = "v1"
