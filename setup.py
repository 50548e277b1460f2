from setuptools import find_packages, setup

setup(
    name="vizoo",
    version="0.1.0",
    description="Improved variational inference for deep latent-variable models, on Keras 3 and TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vizoo", "vizoo.*"]),
    python_requires=">=3.10",
    # Ranges tested at both ends: the newest set (tensorflow 2.21, keras 3.15, tensorflow-probability
    # 0.25, tf-keras 2.21) and the oldest (tensorflow 2.18, keras 3.15, tensorflow-probability 0.25,
    # tf-keras 2.18; scripts/test_older_versions.sh). Keras stays >= 3.15: with 3.8 and 3.10-3.14 the gradient
    # of a Dense layer on [batch, k, ...] inputs corrupted the heap (oneDNN CPU, tensorflow 2.18 and
    # 2.20). The `tensorflow` wheel runs on CPU;
    # GPU users install the extra: pip install -e ".[gpu]".
    install_requires=[
        "tensorflow>=2.18,<2.22",
        "keras>=3.15,<3.16",
        "tensorflow-probability>=0.25,<0.26",  # 0.25 supports tensorflow 2.18 and later
        "tf-keras>=2.18,<2.22",  # tensorflow-probability 0.25 imports it (match tensorflow's minor); vizoo never does
        "numpy>=1.26,<3",
        "scikit-learn>=1.5,<2",
        "tensorflow-datasets>=4.9,<4.10",
        # tensorflow-datasets imports it; 1.21 is generated for protobuf >= 6, which tensorflow 2.18 and 2.19
        # (protobuf 5) cannot load (tfds then fails to import). 1.17 loads with protobuf 5 and 7 (tested).
        "tensorflow-metadata>=1.16,<1.18",
        "importlib_resources>=6",  # tensorflow-datasets 4.9 imports it without declaring it
        "matplotlib>=3.8,<3.12",  # vizoo.plots (imported lazily); tested with 3.11
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]>=2.18,<2.22"],
        "tensorboard": ["tensorboard>=2.18,<2.22"],  # train.py --tensorboard (tensorflow 2.18 needs 2.18)
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "scipy>=1.11,<2", "pyyaml>=6,<7", "tensorboard>=2.18,<2.22"],
    },
    entry_points={"console_scripts": ["vizoo-train=vizoo.cli:main"]},
)
