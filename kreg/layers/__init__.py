"""kreg's layers: Dropout (and, with their issues, DropConnect)."""

from kreg.layers.dropout import Dropout

__all__ = ["Dropout"]
