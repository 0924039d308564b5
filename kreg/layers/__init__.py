"""kreg's layers: Dropout, DropConnect, Gaussian dropout and noise, stochastic
and fractional max-pooling, DropBlock, stochastic depth and Concrete dropout."""

from kreg.layers.concrete_dropout import ConcreteDropout
from kreg.layers.concrete_dropout import concrete_dropout_regularizers
from kreg.layers.dropblock import DropBlock2D
from kreg.layers.dropconnect import DropConnectConv2D
from kreg.layers.dropconnect import DropConnectDense
from kreg.layers.dropout import Dropout
from kreg.layers.fractional_pooling import FractionalMaxPooling2D
from kreg.layers.gaussian_dropout import GaussianDropout
from kreg.layers.gaussian_dropout import GaussianNoise
from kreg.layers.stochastic_depth import StochasticDepth
from kreg.layers.stochastic_depth import stochastic_depth_rates
from kreg.layers.stochastic_pooling import StochasticPooling2D

__all__ = ["DropConnectConv2D", "DropConnectDense", "Dropout",
           "FractionalMaxPooling2D", "GaussianDropout", "GaussianNoise",
           "StochasticPooling2D",
           "ConcreteDropout", "DropBlock2D", "StochasticDepth",
           "concrete_dropout_regularizers", "stochastic_depth_rates"]
