from .reconstruction import DuoLiftReconstruction

__all__ = ["DuoLiftReconstruction"]
