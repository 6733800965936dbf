import torch


def qkv(b=2, h=3, length=33, d=8, *, norm=None, dtype=torch.float64, seed=0):
    """Random q, k, v [B, H, L, d]; with ``norm`` the q and k rows get exactly that length."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, length, d, generator=g, dtype=dtype) for _ in range(3))
    if norm is not None:
        q = q / q.norm(dim=-1, keepdim=True) * norm
        k = k / k.norm(dim=-1, keepdim=True) * norm
    return q, k, v


def dominant_late_key():
    """d = 64, M = 256, L = 256, float32: keys of mixed norms (the first four large, so their exponents
    are very negative) and a last key aligned with the longest projection row, whose exponent exceeds
    theirs by far more than float32's range: a stabilizer that sees it underflows the first outputs."""
    from protein_performer.attention import draw_projection

    g = torch.Generator().manual_seed(0)
    d, m, length = 64, 256, 256
    w = draw_projection(m, d, generator=torch.Generator().manual_seed(1))
    q, v = torch.randn(1, 2, length, d, generator=g), torch.randn(1, 2, length, d, generator=g)
    k = torch.randn(1, 2, length, d, generator=g) * torch.linspace(0.5, 2, length)[:, None]
    k[..., :4, :] *= 25
    late = k.clone()
    late[..., -1, :] = w[w.norm(dim=-1).argmax()] * d**0.25
    return q, k, late, v, w


def corpus_head(path, count: int):
    """The first ``count`` proteins of the embedded corpus written to ``path`` as FASTA (a small,
    real training set for end-to-end tests)."""
    from protein_performer.data import DEFAULT_CORPUS_PATH, read_fasta

    with open(path, "w") as f:
        for i, record in enumerate(read_fasta(DEFAULT_CORPUS_PATH)):
            if i == count:
                break
            f.write(f">{record.id}\n{record.sequence}\n")
    return path


def random_model_dir(path, **config):
    """A model directory with seeded random weights (default: the smallest useful model)."""
    from protein_performer.model import PerformerConfig, PerformerLM
    from protein_performer.rundir import save_model

    torch.manual_seed(0)
    settings = {"d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32, "num_features": 8, "dropout": 0.0, **config}
    model_config = PerformerConfig(**settings)
    save_model(PerformerLM(model_config), model_config, path)
    return path
