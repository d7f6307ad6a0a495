"""Several sampling requests in one forward pass: each (condition set, seeds) request's condition
indices stacked into one batch, and the batch's images split back per request. Every family's
`sample_many` uses these, so a request's rows sit in the same place in each."""

from __future__ import annotations

from collections.abc import Callable

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


def in_passes(run: Callable[[slice], torch.Tensor], total: int, device: torch.device | str, cpu_pass: int
              ) -> torch.Tensor:
    """`run` over rows [0, total) in one call, or on a CPU in calls of at most `cpu_pass` rows,
    concatenated. A CPU works through a large batch slower per image once its activations outgrow
    the caches (docs/BENCHMARKS.md, 2 cores: the cgan's 64 images take 123 ms in passes of 8 and
    249 ms in one; the diffusion sampler's, whose guidance doubles the rows, 2.4 s in passes of 16
    and 4.2 s in one); a GPU wants the whole batch at once."""
    if torch.device(device).type != "cpu" or total <= cpu_pass:
        return run(slice(0, total))
    return torch.cat([run(slice(start, min(start + cpu_pass, total))) for start in range(0, total, cpu_pass)])
