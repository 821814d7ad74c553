"""tfresnet: deep residual networks (He et al. 2015) for Keras 3 / TensorFlow 2.21."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "(.+)"', (HERE / "tfresnet/__init__.py").read_text()).group(1)

setup(
    name="tfresnet",
    version=VERSION,
    description="Deep residual networks (He et al. 2015) for Keras 3 / TensorFlow, "
    "faithful to the paper and fast.",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfresnet", "tfresnet.*"]),
    # Trained weights that ship (build_model(..., weights="fashion_mnist")): docs/models.md.
    package_data={"tfresnet": ["weights/*.weights.h5", "weights/*.json"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorboard>=2.20",  # TF 2.21 no longer installs it; the TensorBoard callback needs it
        "tensorflow-datasets>=4.9",
        "keras-tuner>=1.4.7",
        "absl-py>=2.1",
        "scikit-learn>=1.5",  # ships the embedded default data set (digits)
        "numpy>=1.26",
        "matplotlib>=3.8",  # experiment plots
        "tensorflow-serving-api>=2.21,<2.22",  # warm-up requests for TF Serving
    ],
    extras_require={
        # pyyaml: the deploy test; pillow: the tests write images of every format
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "pyyaml>=6", "pillow>=10"],
        # benchmarks/: the PyTorch peers (the version docs/performance.md measured against)
        "bench": ["torch==2.13.*"],
    },
    entry_points={"console_scripts": ["tfresnet=tfresnet.cli:run"]},
    license="Apache-2.0",
)
