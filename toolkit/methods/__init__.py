"""Training methods, each a :class:`Method` registered by name."""
from .base import METHODS, Method, StepOutput, build_method, option_names, register_method
from . import bptt, online, rate, saf  # noqa: F401  (registration)

__all__ = ["METHODS", "Method", "StepOutput", "build_method", "option_names", "register_method"]
