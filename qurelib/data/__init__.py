"""Dataset adapters into one CIR schema, and the Fashion-Shapes embedded benchmark.

`schema` (Query, CIRSplit, DatasetError), loaders for FashionIQ, CIRR, CIRCO and HP-FashionIQ in
their distributed layouts, `synthetic` (Fashion-Shapes generator and loader), `transforms`
(the released target-pad preprocessing without torchvision).

The Fashion-Shapes names are imported lazily (PEP 562), so `python -m qurelib.data.synthetic`
runs the module once, as __main__, without a second copy in sys.modules.
"""

from qurelib.data.circo import load_circo
from qurelib.data.cirr import load_cirr
from qurelib.data.fashioniq import join_fiq_captions, load_fashioniq
from qurelib.data.hpfiq import HPFIQ, HPFIQItem, load_hpfiq
from qurelib.data.schema import CIRSplit, DatasetError, Query
from qurelib.data.transforms import targetpad_transform

_SYNTHETIC = ("load_fashion_shapes", "make_fashion_shapes", "positives_distribution")

__all__ = ["Query", "CIRSplit", "DatasetError", "load_fashioniq", "load_cirr", "load_circo",
           "load_hpfiq", "HPFIQ", "HPFIQItem", *_SYNTHETIC, "join_fiq_captions",
           "targetpad_transform"]


def __getattr__(name: str):
    # Lazy: `python -m qurelib.data.synthetic` would otherwise import the module twice (runpy warns).
    if name in _SYNTHETIC:
        from qurelib.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'qurelib.data' has no attribute {name!r}")
