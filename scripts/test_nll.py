"""A run's test NLL (nats and bits/dim, with its protocol) on the first N test images, from the model's own
evaluate() and without drawing samples (`genlab eval metrics=[nll]` also draws num_samples samples,
which for MAF inverts 784 dimensions per layer).

    python scripts/test_nll.py RUN_DIR [N]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's genlab


def main() -> None:
    import torch

    from genlab.commands.common import load_run
    from genlab.commands.eval import run_data

    torch.set_num_threads(1)
    run = load_run(sys.argv[1], device="cpu")
    data, _ = run_data(run)
    out = run.model.evaluate(data, limit=int(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(json.dumps({"run": sys.argv[1], "step": run.info["step"], **out}))


if __name__ == "__main__":
    main()
