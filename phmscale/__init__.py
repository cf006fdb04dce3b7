"""phmscale: train hypercomplex neural networks (PHM layers, PHNN convolutions, AlgebraNets,
reduced transformers) on one machine or a Ray cluster, with DeepSpeed, WebDataset and MLflow."""

__version__ = "0.1.0"
