"""Print the batch script that ``python -m rawsr.train -m hydra/launcher=slurm OVERRIDES`` would submit, without
submitting it (no SLURM needed): the same overrides, the launcher built from the composed config, the text from
submitit's ``SlurmExecutor``. A sweep (``key=a,b``) renders as the array of its jobs.

    python scripts/render_sbatch.py hydra.launcher.partition=gpu hydra.launcher.nodes=2 \\
        hydra.launcher.gpus_per_node=4 experiment=x4_blind trainer=ddp trainer.devices=4 trainer.num_nodes=2

The job itself runs ``python -m submitit.core._submit FOLDER``, which loads the pickled Hydra job from FOLDER: the
training overrides live in that pickle, not in the script.
"""

from __future__ import annotations

import sys

from rawsr.config import ConfigError
from rawsr.training.slurm import render_sbatch

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        raise SystemExit(0)
    try:
        print(render_sbatch(sys.argv[1:]))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
