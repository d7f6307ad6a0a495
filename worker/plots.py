"""Charts written as PNG artifacts (matplotlib, headless)."""

from __future__ import annotations

import io


def loss_curve_png(history: list[dict[str, float]], title: str, curves: dict[str, str] | None = None,
                   unit: str = "loss per image (nats)") -> bytes:
    """One line per curve (label -> history key) against the epoch."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib import pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        for label, key in (curves or {"train": "train_loss", "held-out": "test_loss"}).items():
            ax.plot(epochs, [row[key] for row in history], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(fig)
