"""kreg's layers: Dropout, DropConnect, Gaussian dropout and noise, stochastic
and fractional max-pooling."""

from kreg.layers.dropconnect import DropConnectConv2D
from kreg.layers.dropconnect import DropConnectDense
from kreg.layers.dropout import Dropout
from kreg.layers.fractional_pooling import FractionalMaxPooling2D
from kreg.layers.gaussian_dropout import GaussianDropout
from kreg.layers.gaussian_dropout import GaussianNoise
from kreg.layers.stochastic_pooling import StochasticPooling2D

__all__ = ["DropConnectConv2D", "DropConnectDense", "Dropout",
           "FractionalMaxPooling2D", "GaussianDropout", "GaussianNoise",
           "StochasticPooling2D"]
