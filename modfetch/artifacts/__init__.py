"""Artifact types: the vocabulary and detection from source hints, headers and names (never unpickling)."""

from __future__ import annotations

from .detect import Detection, detect, detect_content
from .vocabulary import TYPES, validate_type

__all__ = ["TYPES", "Detection", "detect", "detect_content", "validate_type"]
