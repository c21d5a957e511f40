"""Training on real audio: datasets, the default corpus, the training loop."""

from streamgen.train.loop import TrainConfig, fit, train, train_from_options

__all__ = ["TrainConfig", "fit", "train", "train_from_options"]
