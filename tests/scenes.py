"""Small hand-made scenes shared by the tests."""

from sae.render.gradcheck import one_object_scene

__all__ = ["one_object_scene"]
