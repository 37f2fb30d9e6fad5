"""Yunnao's SDK for capability authors: the ``capability`` decorator, tensor types, the
hook specifications and plugin loading, and the error hierarchy every layer shares.

This package depends on pluggy and pydantic only, so authors install a light SDK
(numpy for tensors, and Pillow for images, are imported only where those are used).
"""

from .capability import Capability, Invocation, capability
from .errors import SpecError
from .hookspecs import hookimpl
from .media import File, Image, file, image
from .tensor import Tensor

__all__ = [
    "Capability",
    "File",
    "Image",
    "Invocation",
    "SpecError",
    "Tensor",
    "capability",
    "file",
    "hookimpl",
    "image",
]
