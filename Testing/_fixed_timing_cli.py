"""The package's CLI with a fixed step timing and a clock that stands still, so that a time budget plans the
same run on any machine, however busy (``python Testing/_fixed_timing_cli.py train ...``, also under torchrun).

Every training step is taken to last :data:`SECONDS_PER_STEP` seconds, validation 1e-6 s a pixel and a
checkpoint 0.5 s; no time passes on the budget's clock, so loading the data spends none of the budget.
"""

import sys

from AttentionMambaSegLib.cli import main
from AttentionMambaSegLib.training.budget import StepTimes
from AttentionMambaSegLib.training.trainer import Trainer

SECONDS_PER_STEP = 5.0

Trainer.clock = staticmethod(lambda: 0.0)
Trainer.measure_step_times = lambda self, *args: StepTimes(SECONDS_PER_STEP, 1e-6, 0.5)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
