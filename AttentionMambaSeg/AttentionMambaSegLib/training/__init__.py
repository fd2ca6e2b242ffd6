"""Training of Attention-Mamba on an nnU-Net v2 raw dataset (arXiv 2402.02286 v4, Sec. 4).

The recipe of the paper, as one class, :class:`~.trainer.Trainer` (:func:`train` runs it with a
:class:`~.config.TrainingConfig`):

- 2D slices of the training cases (:mod:`..datasets`, :mod:`..slicing`), resampled in-plane to the median
  in-plane spacing of the training cases, normalised per modality (MRI z-score per case, RGB ImageNet);
- random fixed-size crops of whole slices (zero padding first when a slice is smaller than the patch);
- augmentation (:mod:`.augmentation`): rotation (p 0.2, any angle), horizontal and vertical flips (p 0.5 each),
  zoom (p 0.2, factor 0.7-1.4), gamma (p 0.3, 0.7-1.5). Rotation, zoom and the crop are one bilinear resampling
  (nearest neighbour for labels) straight from the whole slice, so no empty corners are cut in;
- deep supervision over the 9 training outputs (:mod:`losses`);
- AdamW (betas 0.9/0.999, weight decay on every parameter), cosine annealing stepped once per epoch
  with T_max = epochs / 3 and eta_min 1e-5 (the rate falls, rises and falls again);
- seed 1290; checkpoint selection by validation Dice (on the fold's validation cases).

Deviations from the paper, and additions:

- Validation each epoch runs on whole slices (zero-padded to a multiple of 32, no test-time
  augmentation) of a fixed random subset of the validation slices, sized so that validation costs about
  a tenth of the training time; the score is the Dice per class pooled over that subset, averaged over
  the foreground classes. The selected model is then scored per case (Dice and HD95 on the original
  grids, with flip test-time augmentation) by :func:`evaluation.evaluate`, and those figures go into
  model.json.
- ``time_budget_minutes`` fits the whole cosine schedule into a wall-clock budget: the first
  iterations are timed on a throw-away copy of the network, then epochs and iterations per epoch are set
  (:func:`plan_schedule`). An epoch is one pass over the training slices unless the budget says
  otherwise.
- Every epoch ends with a checkpoint; ``resume=True`` restores model, optimiser, scheduler, random
  number generators and epoch, so a resumed run is bit-identical to an uninterrupted one (same device,
  same number of threads).
- The ISIC-2018 recipe (lowest *training* loss) is not used: every model is selected on validation data.

Output folder::

    OUTPUT/
      model/                  the model package (model.json + model.safetensors), written at the end
      checkpoint_latest.pt    full training state after the last finished epoch (for --resume)
      checkpoint_best.pt      network weights of the best validation epoch
      training_config.json    the resolved settings and schedule
      training_log.csv        one row per epoch
      training_curves.png     train / validation loss and validation Dice
      val_metrics.csv, val_metrics.png   per-case evaluation of the final model (if final_evaluation)

Layout: :mod:`.config` (the settings), :mod:`.trainer` (the run), :mod:`.run_state` (what its steps share),
:mod:`.augmentation` (crops and augmentations), :mod:`.schedule` (learning rate, time budget),
:mod:`.train_step` (one optimiser step), :mod:`.budget` (timing and planning a run under a time budget),
:mod:`.validation`, :mod:`.checkpoint`, :mod:`.report` (log and curves), :mod:`.card_writer`,
:mod:`.packaging` (the model package a run ends with).
"""

from .augmentation import NO_AUGMENTATION, PAPER, PRESETS, SITE, AugmentationParams, sample_batch
from .card_writer import KNOWN_DATASETS, default_classes, summary_to_metrics, training_lineage
from .checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, load_checkpoint
from .config import ConfigError, TrainingConfig
from .packaging import PACKAGE_FOLDER
from .schedule import ETA_MIN, MIN_EPOCHS, SchedulePlan, cosine_factor, plan_schedule
from .trainer import Trainer, new_network, train
from .validation import validate

__all__ = [
    "AugmentationParams",
    "CHECKPOINT_BEST",
    "CHECKPOINT_LATEST",
    "ConfigError",
    "ETA_MIN",
    "KNOWN_DATASETS",
    "MIN_EPOCHS",
    "NO_AUGMENTATION",
    "PACKAGE_FOLDER",
    "PAPER",
    "PRESETS",
    "SITE",
    "SchedulePlan",
    "Trainer",
    "TrainingConfig",
    "cosine_factor",
    "new_network",
    "default_classes",
    "load_checkpoint",
    "plan_schedule",
    "sample_batch",
    "summary_to_metrics",
    "train",
    "training_lineage",
    "validate",
]
