"""snnkit: train deep spiking neural networks efficiently and carry them to deployment."""
__version__ = "0.1.0"
