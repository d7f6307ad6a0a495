"""Several sampling requests in one forward pass: each (condition set, seeds) request's condition
indices stacked into one batch, and the batch's images split back per request. Every family's
`sample_many` uses these, so a request's rows sit in the same place in each."""

from __future__ import annotations

import torch

Request = tuple[dict[str, int], list[int]]  # (condition set, one seed per image)


def stacked_conditions(requests: list[Request], device: torch.device | str) -> dict[str, torch.Tensor]:
    """{condition: [total images] long}: each request's value repeated once per seed, in order."""
    return {name: torch.cat([torch.full((len(seeds),), cond[name], dtype=torch.long, device=device)
                             for cond, seeds in requests])
            for name in requests[0][0]}


def per_request(images: torch.Tensor, requests: list[Request]) -> list[torch.Tensor]:
    """The batch's images, one tensor per request."""
    return list(images.split([len(seeds) for _, seeds in requests]))
