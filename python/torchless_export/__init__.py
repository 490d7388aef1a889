"""torchless_export: the training-side companion of torchless (reference models, exporter,
exportability report, encoder-side compression into torchless containers)."""
__version__ = "0.1.0"
