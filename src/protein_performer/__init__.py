"""protein-performer: long-context protein language models with FAVOR attention."""

import os

# MKL may pick its thread count per call from the machine's load (MKL_DYNAMIC), and a different
# split of a matrix product rounds differently: a resumed run would then drift from an uninterrupted
# one. Fixing it keeps training bitwise reproducible. Must be set before torch loads MKL.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_DYNAMIC", "FALSE")

__version__ = "0.1.0"


def load(path, device=None):
    """A trained model directory (``config.json`` + ``model.safetensors``) → a
    :class:`~protein_performer.inference.ProteinLanguageModel` in eval mode, with ``.alphabet``, on
    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``; default: CUDA when
    available, else the CPU).

    Imported here lazily: ``import protein_performer`` stays light (and sets the variables above
    before torch loads)."""
    from .inference import load as _load

    return _load(path, device)
