"""Yunnao's SDK for capability authors: the ``capability`` decorator, tensor types, the
hook specifications and plugin loading, and the error hierarchy every layer shares.

This package depends on pluggy and pydantic only, so authors install a light SDK.
"""

from .capability import Capability, Invocation, capability
from .errors import SpecError
from .hookspecs import hookimpl
from .tensor import Tensor

__all__ = ["Capability", "Invocation", "SpecError", "Tensor", "capability", "hookimpl"]
