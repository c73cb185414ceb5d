"""Runnable examples built on SipMesh's libraries (not services of the mesh)."""
