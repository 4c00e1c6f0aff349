"""Embedded default data of stcstore (see README.md here)."""
