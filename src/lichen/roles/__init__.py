"""Composition roots for each role (tracker, node); ``lichen.up`` combines them."""
