"""Model families. Each module holds a config dataclass, the nn.Module (no I/O) and
`to_checkpoint`/`from_checkpoint`, the config travelling inside every checkpoint."""

from worker.models import cvae

FAMILIES = {"cvae": cvae}
