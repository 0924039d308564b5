"""Test-time Monte Carlo averaging with calibrated uncertainty."""

from kreg.mc.convert import convert_dropout
from kreg.mc.moments import MomentPrediction
from kreg.mc.moments import MomentPredictor
from kreg.mc.prediction import MCPrediction
from kreg.mc.predictor import MCPredictor

__all__ = ["MCPredictor", "MCPrediction", "MomentPrediction", "MomentPredictor",
           "convert_dropout"]
