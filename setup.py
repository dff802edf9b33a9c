from setuptools import find_packages
from setuptools import setup

setup(
    name="keras-l0",
    version="0.1.0",
    description=(
        "Structured L0 pruning of Keras 3 recurrent layers: remove whole "
        "neurons, ship a slimmer, faster TFLite model."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_l0", "keras_l0.*"]),
    py_modules=["keras_l0_shrink"],
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.10,<4",
        "numpy>=1.26,<3",
    ],
    extras_require={
        "tensorflow": ["tensorflow>=2.20,<2.22"],
        "export": [
            "tensorflow>=2.20,<2.22",
            "tf-keras>=2.20,<2.22",
            "ai-edge-litert>=1.2,<3",
        ],
        "jax": ["jax[cpu]>=0.4.34,<0.13"],
        "plot": ["matplotlib>=3.8,<4"],
        # The PTB study's TFMOT baseline (benchmarks/ptb/ptb_tfmot.py).
        # tensorflow-model-optimization 0.8 pins absl-py~=1.2 (pip moves
        # absl-py to 1.4, which TensorFlow 2.21 accepts).
        "study": ["tensorflow-model-optimization>=0.8,<0.9"],
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "hypothesis>=6.100,<7",
            "scikit-learn>=1.4,<2",
        ],
    },
    entry_points={
        "console_scripts": [
            "keras-l0-shrink=keras_l0_shrink:main",
        ],
    },
)
