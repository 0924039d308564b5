"""kreg's layers: Dropout (and, with their issues, DropConnect)."""

from kreg.layers.dropconnect import DropConnectConv2D
from kreg.layers.dropconnect import DropConnectDense
from kreg.layers.dropout import Dropout

__all__ = ["DropConnectConv2D", "DropConnectDense", "Dropout"]
