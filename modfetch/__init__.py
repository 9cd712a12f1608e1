"""modfetch: fast, verified, resumable downloads of ML model files, placed where local AI apps look for them."""

__version__ = "0.1.0"
