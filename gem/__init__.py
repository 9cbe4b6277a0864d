"""GEM: Geometric Entropy Mixing. Balanced vMF clustering on the hypersphere for data curation."""

__version__ = "0.1.0"
