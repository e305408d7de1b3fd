"""Training machinery: state, step factory, loop, checkpoints, outputs."""

from genjax.train.checkpoint import Checkpointer, CheckpointError
from genjax.train.loop import TrainingDiverged, train_and_evaluate
from genjax.train.modes import evaluate, run_mode, sample
from genjax.train.state import TrainState, build_optimizer
from genjax.train.step import make_eval_step, make_mesh
