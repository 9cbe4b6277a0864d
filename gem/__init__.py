"""GEM: Geometric Entropy Mixing. Balanced vMF clustering on the hypersphere for data curation."""

__version__ = "0.1.0"


def __getattr__(name):
    # lazy: `import gem` stays light (no torch / scikit-learn until the estimator is used)
    if name == "GEM":
        from .model import GEM

        return GEM
    raise AttributeError(f"module 'gem' has no attribute {name!r}")
