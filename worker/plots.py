"""Charts written as PNG artifacts (matplotlib, headless)."""

from __future__ import annotations

import io

import numpy as np


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


LATENT_MAP_TYPES = 12  # the most common types get their own colour and legend entry; the rest are grey


def latent_map_png(latents: np.ndarray, labels: np.ndarray, names: list[str], title: str, seed: int = 0) -> bytes:
    """Seed 003's latent map: [N, latent] held-out posterior means projected to 2-D with t-SNE
    (scikit-learn), one dot per image, coloured by product type."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(latents) - 1) / 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(latents)
    common = [int(t) for t in np.argsort(-np.bincount(labels, minlength=len(names)), kind="stable")[:LATENT_MAP_TYPES]
              if (labels == t).any()]
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    try:
        rest = ~np.isin(labels, common)
        ax.scatter(points[rest, 0], points[rest, 1], s=4, c="#cccccc", label="other types")
        palette = plt.get_cmap("tab20")
        for i, t in enumerate(common):
            mask = labels == t
            ax.scatter(points[mask, 0], points[mask, 1], s=6, color=palette(i % 20), label=names[t])
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(fig)
