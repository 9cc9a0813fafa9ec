"""Small loss-curve plots written beside nnU-Net's progress.png."""
from __future__ import annotations

from typing import Dict, Sequence


def plot_curves(out_file: str, x: Sequence, curves: Dict[str, Sequence], title: str, xlabel: str,
                dashed: Sequence[str] = (), ylabel: str = "loss"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # nnU-Net's own progress plot sets seaborn's global font scale 2.5; draw ours with matplotlib defaults
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, y in curves.items():
            ax.plot(x, y, ls="--" if name in dashed else "-", label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(out_file, dpi=100)
        plt.close(fig)
