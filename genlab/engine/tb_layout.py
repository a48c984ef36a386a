"""TensorBoard's custom-scalars layout: the charts people look for, built from the tags a run logs.

The Scalars tab draws one chart per tag; the Custom Scalars tab draws what this layout says: every
step's loss on one chart (D's and G's together), the critic's Wasserstein estimate, D(x) against
D(G(z)), the penalties, the gradient norms, and each evaluation metric on a chart of its own. Only
charts that some logged tag fills are written, and the layout is rewritten when new tags appear
(TensorBoard reads a run's latest layout), so it fits every model without naming any.
"""

from __future__ import annotations

import re

#: (category, chart title, which tags it draws); a tag is drawn by the first training chart it matches
TRAINING = [
    ("losses", "losses (every step's: D and G together)", re.compile(r"^[^/]+/loss$")),
    ("losses", "Wasserstein estimate (critic)", re.compile(r"/wasserstein$")),
    ("losses", "D(x) and D(G(z))", re.compile(r"/(D_x|D_G_z)$")),
    ("losses", "penalties", re.compile(r"penalty$")),
    ("optimisation", "gradient norms", re.compile(r"grad_norm$")),
    ("optimisation", "learning rates", re.compile(r"^lr/")),
    ("optimisation", "speed", re.compile(r"^perf/(steps_per_sec|eval_seconds)$")),
]
EVAL_PREFIX = "eval/"


def eval_chart(tag: str) -> str:
    """The chart of an evaluation tag: its metric with the spread beside it (kid and kid_std together)."""
    return re.sub(r"_std(?=\[|$)", "", tag[len(EVAL_PREFIX):])


def layout(tags) -> dict[str, dict[str, list]]:
    """SummaryWriter.add_custom_scalars' layout for these tags: {category: {chart: ['Multiline', [regex]]}}."""
    charts: dict[tuple[str, str], list[str]] = {}
    for tag in sorted(tags):
        if tag.startswith(EVAL_PREFIX):
            key = ("evaluation", eval_chart(tag))
        else:
            key = next(((cat, title) for cat, title, pattern in TRAINING if pattern.search(tag)), None)
        if key is not None:
            charts.setdefault(key, []).append(f"^{re.escape(tag)}$")
    out: dict[str, dict[str, list]] = {}
    order = [cat for cat, _, _ in TRAINING] + ["evaluation"]
    for (cat, title), patterns in sorted(charts.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        out.setdefault(cat, {})[title] = ["Multiline", patterns]
    return out


class Layout:
    """The tags a writer has seen; writes the layout again whenever a new tag adds to it."""

    def __init__(self, writer):
        self.writer = writer
        self.tags: set[str] = set()
        self.written: dict | None = None

    def update(self, tags) -> None:
        """Note these tags; a new one rewrites the layout."""
        new = set(tags) - self.tags
        if not new:
            return
        self.tags |= new
        current = layout(self.tags)
        if current and current != self.written:
            self.writer.add_custom_scalars(current)
            self.written = current
