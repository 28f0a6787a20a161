"""Agent Town: a tiny town guarded by the in-process entitlements client (README.md here)."""

from .town import Citizen, Refused, Session, Town

__all__ = ["Citizen", "Refused", "Session", "Town"]
