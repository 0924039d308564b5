"""Weight initializers: He initialization with leaky-ReLU and dropout gains."""

from kreg.initializers.he_normal import HeNormal

__all__ = ["HeNormal"]
