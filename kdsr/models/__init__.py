"""KDSR networks: KD-IDE encoder, IDR-DCRB SR network, teacher / student models, save / load."""

from .complexity import count_macs, count_parameters
from .discriminator import UNetDiscriminatorSN
from .encoder import KDIDE
from .kdsr_model import PAPER_PARAMS_M, VARIANTS, KDSRStudent, KDSRTeacher, load, shipped_names
from .sr_network import IDRDCRB, IDRDDC, SRNetwork

__all__ = [
    "KDSRStudent",
    "KDSRTeacher",
    "load",
    "VARIANTS",
    "PAPER_PARAMS_M",
    "shipped_names",
    "count_parameters",
    "count_macs",
    "KDIDE",
    "SRNetwork",
    "IDRDCRB",
    "IDRDDC",
    "UNetDiscriminatorSN",
]
