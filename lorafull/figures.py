"""pyplot on the Agg backend (no display on a cluster node) and writing a figure to PNG: shared by the report
and the analyses, so neither imports the other for it."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 -- after choosing the backend


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Lay out, write the PNG (making its folder) and free the figure: every plot of the package ends here."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
