"""The Attention-Mamba network (arXiv 2402.02286), one module per part of the paper."""

from .backbone import DeepStemResNet18
from .fusion import MambaAttentionFusion, MambaBranch
from .mamba import SS2D, BiMamba1D, Mamba1D, VSSBlock
from .neck import DualPathNeck
from .network import SIZE_MULTIPLE, AttentionMamba
from .ram import RecursiveAlignment

__all__ = [
    "AttentionMamba",
    "BiMamba1D",
    "DeepStemResNet18",
    "DualPathNeck",
    "Mamba1D",
    "MambaAttentionFusion",
    "MambaBranch",
    "RecursiveAlignment",
    "SIZE_MULTIPLE",
    "SS2D",
    "VSSBlock",
]
