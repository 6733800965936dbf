import torch


def qkv(b=2, h=3, length=33, d=8, *, norm=None, dtype=torch.float64, seed=0):
    """Random q, k, v [B, H, L, d]; with ``norm`` the q and k rows get exactly that length."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, length, d, generator=g, dtype=dtype) for _ in range(3))
    if norm is not None:
        q = q / q.norm(dim=-1, keepdim=True) * norm
        k = k / k.norm(dim=-1, keepdim=True) * norm
    return q, k, v
