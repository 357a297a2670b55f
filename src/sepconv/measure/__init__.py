"""Measurement: params/MACs (``profile``) and latency."""

from .profile import LayerRow, Profile, profile

__all__ = ["LayerRow", "Profile", "profile"]
