"""Training on real audio: datasets, the default corpus, the training loop.

    from streamgen.train import TrainConfig, train
    from streamgen.train.corpus import build_corpus

    build_corpus("data/bach16k")                      # Bach chorales on piano, 16 kHz
    train(TrainConfig(data="data/bach16k", out_dir="runs/sequnet", steps=20000))

Several processes: ``torchrun --nproc_per_node=N script.py`` where the script calls ``train``;
``batch_size`` is then the global batch, split over the ranks.
"""

from streamgen.train.loop import TrainConfig, fit, train, train_from_options

__all__ = ["TrainConfig", "fit", "train", "train_from_options"]
