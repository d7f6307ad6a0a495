"""Charts written as PNG artifacts (matplotlib, headless)."""

from __future__ import annotations

import io


def loss_curve_png(history: list[dict[str, float]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib import pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        ax.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
        ax.plot(epochs, [row["test_loss"] for row in history], marker="s", label="held-out")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss per image (nats)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(fig)
