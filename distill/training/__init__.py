"""Training: the epoch loop with early stopping and checkpoints (loop), the losses, and the worker
processes that train several models at once (parallel). Used by the teacher's heads and the
students."""
