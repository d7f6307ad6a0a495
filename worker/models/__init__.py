"""Model families: each module holds a config dataclass, the nn.Module (no I/O), its sampling
functions and `to_checkpoint`/`from_checkpoint`, the config travelling inside every checkpoint. How
each is trained, loaded and sampled is the family contract in `worker/families.py`."""
