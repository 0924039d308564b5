"""kreg's layers: Dropout and DropConnect (and, with their issues, more)."""

from kreg.layers.dropconnect import DropConnectConv2D
from kreg.layers.dropconnect import DropConnectDense
from kreg.layers.dropout import Dropout

__all__ = ["DropConnectConv2D", "DropConnectDense", "Dropout"]
