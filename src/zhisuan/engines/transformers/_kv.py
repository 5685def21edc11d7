"""The running batch's KV cache: joining a prefilled group to it, and keeping some rows.

Layout: every layer of a ``DynamicCache`` holds keys/values ``(B, kv_heads, L, head_dim)``;
the attention mask is ``(B, L)`` with 0 on left padding. Both sides of a join are
left-padded to the common length.
"""

from __future__ import annotations

from typing import Any

import torch


def clear_padding(cache: Any, mask: Any) -> None:
    """Zero the keys and values of ``cache`` where ``mask`` ``(b, l)`` is padding, in place:
    padded rows may hold NaN from fully masked attention, and 0 * NaN would leak."""
    keep = mask.bool()[:, None, :, None]  # (b, 1, l, 1)
    for layer in cache.layers:
        layer.keys = torch.where(keep, layer.keys, 0)
        layer.values = torch.where(keep, layer.values, 0)


def join(cache: Any, mask: Any, new_cache: Any, new_mask: Any) -> Any:
    """Append the rows of ``new_cache`` to ``cache`` (in place), both left-padded to the
    longer length; returns the joined mask ``(B + b, L')``."""
    width = max(mask.shape[1], new_mask.shape[1])
    for old, new in zip(cache.layers, new_cache.layers, strict=True):
        old.keys = torch.cat([pad_left(old.keys, width, 2), pad_left(new.keys, width, 2)])
        old.values = torch.cat([pad_left(old.values, width, 2), pad_left(new.values, width, 2)])
    return torch.cat([pad_left(mask, width, 1), pad_left(new_mask, width, 1)])


def keep_rows(cache: Any, mask: Any, keep: list[int]) -> Any:
    """Keep only rows ``keep`` of ``cache`` (in place) and drop the columns that are padding
    in every row kept; returns the new mask."""
    index = torch.tensor(keep, dtype=torch.long, device=mask.device)
    mask = mask.index_select(0, index)
    # columns that are padding in every remaining row can go
    first = int(torch.argmax(mask.any(dim=0).to(torch.int8)).item())
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)[:, :, first:]
        layer.values = layer.values.index_select(0, index)[:, :, first:]
    return mask[:, first:]


def pad_left(t: Any, width: int, dim: int) -> Any:
    """``t`` with zeros prepended along ``dim`` up to ``width``."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
