"""Desired state of a FalApp's children and status from a snapshot; no I/O."""
