"""Polyphonic music: the plain Seq-U-Net against a float64 reference on the absolute grid,
parameter counts of the paper's models, the data loader, the frame NLL and a tiny training run."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import randomize_
from streamgen.checkpoint import load_checkpoint
from streamgen.nn import TCN, PlainSeqUNet, PlainSeqUNetConfig, TCNConfig
from streamgen.nn.base import NetworkConfig, StreamableNetwork
from streamgen.train import symbolic
from streamgen.train.symbolic import (
    DATA_ENV,
    SPLITS,
    PolyMusicError,
    SymbolicTrainConfig,
    _Progress,
    default_data_dir,
    evaluate,
    load_poly_music,
    piece_nll,
    train_symbolic,
)

scipy_io = pytest.importorskip("scipy.io")


# -- networks --------------------------------------------------------------------------------
def test_paper_parameter_counts() -> None:
    """The reference's layers one for one: JSB 521,938 vs the paper's 522K, TCN 534,468 vs 534K."""
    c, k, keys = 175, 3, 88
    conv = lambda n_in, n_out, kk: n_in * n_out * kk + n_out  # noqa: E731
    # encoder conv + down, bottleneck, up + conv over [up; skip], 1x1 head
    expected = conv(keys, c, k) + conv(c, c, k) + conv(c, c, k) + conv(c, c, k) + conv(2 * c, c, k) + conv(c, keys, 1)
    jsb = PlainSeqUNet(PlainSeqUNetConfig(channels=c, levels=2, kernel_size=k, dropout=0.5))
    assert jsb.num_parameters() == expected == 521_938
    # weight norm adds one gain per output channel; a 1x1 projection where the width changes
    h = 220
    wn = lambda n_in: n_in * h * 3 + 2 * h  # noqa: E731
    tcn = TCN(TCNConfig(channels=h, levels=2, kernel_size=3, dropout=0.5, classes=keys))
    assert tcn.num_parameters() == wn(keys) + wn(h) + (keys * h + h) + 2 * wn(h) + (h * keys + keys) == 534_468
    nott = PlainSeqUNet(PlainSeqUNetConfig(channels=150, levels=4, kernel_size=5, dropout=0.2))
    nott_tcn = TCN(TCNConfig(channels=215, levels=4, kernel_size=5, dropout=0.2, classes=keys))
    assert 1.65e6 < nott.num_parameters() < 1.8e6 and 1.65e6 < nott_tcn.num_parameters() < 1.8e6


def reference_plain_sequnet(model: PlainSeqUNet, x: torch.Tensor) -> torch.Tensor:
    """Output of every step ``(keys, T)`` computed frame by frame on the absolute grid.

    Level ``l`` has frames ``f`` at times ``(f + 1) * 2**l - 1``; inputs before time 0 are
    zero. A down conv's frame ``g`` reads fine frames up to ``2g + 1``; the transposed conv's
    fine frame ``f`` sums tap ``j`` of coarse frame ``(f - 1 - j) / 2`` where that is whole.
    """
    cfg = model.config
    k = cfg.kernel_size
    history = model.receptive_field + 2 * model.period

    def unit(conv: torch.nn.Module, seq: dict[int, torch.Tensor], kind: str) -> dict[int, torch.Tensor]:
        w, b = conv.weight, conv.bias
        out = {}
        lo, hi = min(seq), max(seq)
        frames = {"plain": range(lo, hi + 1), "down": range(lo // 2 - 1, hi // 2 + 1),
                  "up": range(2 * lo, 2 * hi + 3)}[kind]  # wide enough; absent inputs skip a frame
        for f in frames:
            if kind == "up":
                taps = [(j, (f - 1 - j) // 2) for j in range(k) if (f - 1 - j) % 2 == 0]
                if not all(i in seq for _, i in taps):
                    continue
                y = b + sum(w[:, :, j].T @ seq[i] for j, i in taps)
            else:
                last = f if kind == "plain" else 2 * f + 1
                idx = [last - (k - 1) + j for j in range(k)]
                if not all(i in seq for i in idx):
                    continue
                y = b + sum(w[:, :, j] @ seq[i] for j, i in enumerate(idx))
            out[f] = F.leaky_relu(y, 0.01)
        return out

    steps = x.shape[-1]
    seq = {t: (x[:, t] if t >= 0 else torch.zeros_like(x[:, 0])) for t in range(-history, steps)}
    skips = []
    for enc in model.encoder:
        seq = unit(enc.conv.conv, seq, "plain")
        skips.append(seq)
        seq = unit(enc.down.conv, seq, "down")
    seq = unit(model.bottleneck.conv, seq, "plain")
    for dec, skip in zip(model.decoder, reversed(skips)):
        up = unit(dec.up.conv, seq, "up")
        joined = {f: torch.cat([up[f], skip[f]]) for f in up if f in skip}
        seq = unit(dec.conv.conv, joined, "plain")
    head = model.head
    return torch.stack([head.weight[:, :, 0] @ seq[t] + head.bias for t in range(steps)], dim=-1)


@pytest.mark.parametrize("levels,k", [(1, 3), (2, 3), (3, 5), (4, 3)])
def test_plain_sequnet_matches_frame_by_frame_reference(levels: int, k: int, rng: torch.Generator) -> None:
    model = PlainSeqUNet(PlainSeqUNetConfig(channels=5, levels=levels, kernel_size=k, dropout=0.3, classes=6))
    model = model.double().eval()
    randomize_(model, rng, scale=1.0)
    steps = 3 * model.period + 1  # not a multiple of the period: the grid must still start at t = 0
    x = torch.randint(0, 2, (6, steps), generator=rng).double()
    expected = reference_plain_sequnet(model, x)
    with torch.no_grad():
        got = model.forward_from_start(x[None])[0]
    assert got.shape == (6, steps)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("factory", [
    lambda: PlainSeqUNet(PlainSeqUNetConfig(channels=6, levels=3, kernel_size=3, dropout=0.0, classes=8)),
    lambda: TCN(TCNConfig(channels=6, levels=3, kernel_size=2, dropout=0.0, classes=8)),
])
def test_forward_from_start_is_a_stream(factory, rng: torch.Generator) -> None:
    """Every prefix gives the same outputs as the whole sequence (grid fixed from step 0)."""
    model = factory().double().eval()
    randomize_(model, rng)
    x = torch.rand(2, 8, 21, generator=rng, dtype=torch.float64)
    with torch.no_grad():
        full = model.forward_from_start(x)
        for n in (1, 5, 8, 13):
            torch.testing.assert_close(model.forward_from_start(x[..., :n]), full[..., :n])
        if isinstance(model, TCN):  # single rate: plain causal zero padding
            ref = model(F.pad(x, (model.receptive_field - 1, 0)))
            torch.testing.assert_close(full, ref)


# -- data ------------------------------------------------------------------------------------
def write_mat(path, splits: dict[str, list[np.ndarray]]) -> None:
    cells = {}
    for key, pieces in splits.items():
        cell = np.empty((1, len(pieces)), dtype=object)
        for i, p in enumerate(pieces):
            cell[0, i] = p
        cells[key] = cell
    scipy_io.savemat(str(path), cells)


def random_rolls(rng: np.random.Generator, count: int, lengths=(5, 12)) -> list[np.ndarray]:
    return [(rng.random((int(rng.integers(*lengths)), 88)) < 0.1).astype(np.uint8) for _ in range(count)]


def write_random_task(folder, seed: int, pieces: int) -> None:
    """``folder/JSB_Chorales.mat`` with ``pieces`` random rolls in each split."""
    rng = np.random.default_rng(seed)
    write_mat(folder / "JSB_Chorales.mat", {key: random_rolls(rng, pieces) for key in SPLITS.values()})


TINY_PLAIN = dict(channels=4, levels=2, kernel_size=3, dropout=0.0)


def tiny_run(folder, out, **options) -> SymbolicTrainConfig:
    """A run of a tiny plain Seq-U-Net on ``folder``'s JSB set into ``out``."""
    return SymbolicTrainConfig(task="jsb", kind="plain_sequnet", out_dir=str(out), data=str(folder),
                               model=dict(TINY_PLAIN), **options)


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_loader_reads_pieces_as_key_by_time(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    splits = {"traindata": random_rolls(rng, 3), "validdata": random_rolls(rng, 2),
              "testdata": random_rolls(rng, 1) + random_rolls(rng, 1, lengths=(2, 3))}  # 2 frames
    write_mat(tmp_path / "JSB_Chorales.mat", splits)
    data = load_poly_music("jsb", tmp_path)
    for split, key in (("train", "traindata"), ("valid", "validdata"), ("test", "testdata")):
        assert len(data[split]) == len(splits[key])
        for got, roll in zip(data[split], splits[key]):
            assert got.dtype == torch.float32 and got.shape == (88, roll.shape[0])
            assert np.array_equal(got.numpy(), roll.T)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path
    assert len(load_poly_music("jsb")["train"]) == 3


def test_default_data_folder_is_the_first_shared_data_above_the_package(tmp_path, monkeypatch) -> None:
    """Without ``$STREAMGEN_POLY_MUSIC``: the nearest ``shared/data/poly_music`` in a folder
    above the module, else none."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    module = tmp_path / "outer" / "checkout" / "streamgen" / "train" / "symbolic.py"
    monkeypatch.setattr(symbolic, "__file__", str(module))
    assert default_data_dir() is None
    for above in (tmp_path / "outer", tmp_path / "outer" / "checkout"):  # the nearer one wins
        (above / "shared" / "data" / "poly_music").mkdir(parents=True)
        assert default_data_dir() == above / "shared" / "data" / "poly_music"


@pytest.mark.parametrize("case", ["no folder", "no file", "not a mat file", "missing split", "bad shape",
                                  "one frame", "task"])
def test_loader_errors_are_one_line(tmp_path, case: str) -> None:
    rng = np.random.default_rng(1)
    good = {"traindata": random_rolls(rng, 2), "validdata": random_rolls(rng, 2), "testdata": random_rolls(rng, 2)}
    task, folder = "jsb", tmp_path
    if case == "no folder":
        folder = tmp_path / "absent"
    elif case == "not a mat file":
        (tmp_path / "JSB_Chorales.mat").write_text("hello")
    elif case == "missing split":
        write_mat(tmp_path / "JSB_Chorales.mat", {k: v for k, v in good.items() if k != "testdata"})
    elif case == "bad shape":
        write_mat(tmp_path / "JSB_Chorales.mat", {**good, "validdata": [np.zeros((4, 87), np.uint8)]})
    elif case == "one frame":  # nothing to predict
        write_mat(tmp_path / "JSB_Chorales.mat", {**good, "traindata": [np.zeros((1, 88), np.uint8)]})
    elif case == "task":
        task = "bach"
    with pytest.raises(PolyMusicError) as err:
        load_poly_music(task, folder)
    message = str(err.value)
    assert "\n" not in message
    expected = {"no folder": "not found", "no file": "no such file", "not a mat file": "not a readable",
                "missing split": "'testdata'", "bad shape": "(4, 87)", "one frame": "(1, 88)",
                "task": "unknown task"}[case]
    assert expected in message


def test_real_data_sets_have_their_published_sizes() -> None:
    if default_data_dir() is None:
        pytest.skip("poly-music data folder not present")
    sizes = {split: len(pieces) for split, pieces in load_poly_music("jsb").items()}
    assert sizes == {"train": 229, "valid": 76, "test": 77}


# -- metric ----------------------------------------------------------------------------------
class CopyPrevious(StreamableNetwork):
    """Predicts each frame to repeat the last: logit ``+a`` for a key that was on, ``-a`` if off."""

    kind = "copy_previous"

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.config = NetworkConfig()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (2 * x - 1)

    def output_length(self, input_length: int) -> int:
        return input_length

    def input_length(self, output_length: int) -> int:
        return output_length


def test_frame_nll_by_hand() -> None:
    """Keys that repeat cost log(1 + e^-a), keys that change log(1 + e^a); frame 0 is not predicted."""
    a = 1.5
    rolls = [torch.zeros(88, 4), torch.zeros(88, 2)]
    rolls[0][3, 0:2] = 1  # on at frames 0,1: changes at frame 2 only
    rolls[0][10, 3] = 1  # turns on at frame 3
    rolls[1][5, 0] = 1  # on at frame 0 only: changes at frame 1
    keep, flip = math.log1p(math.exp(-a)), math.log1p(math.exp(a))
    nll0, n0 = piece_nll(CopyPrevious(a), rolls[0])
    assert n0 == 3
    assert float(nll0) == pytest.approx((3 * 88 - 2) * keep + 2 * flip, rel=1e-6)
    nll1, n1 = piece_nll(CopyPrevious(a), rolls[1])
    assert n1 == 1 and float(nll1) == pytest.approx(87 * keep + flip, rel=1e-6)
    # the split's NLL averages over all predicted frames, not over pieces
    expected = ((3 * 88 - 2) * keep + 2 * flip + 87 * keep + flip) / 4
    assert evaluate(CopyPrevious(a), rolls) == pytest.approx(expected, rel=1e-6)


def test_an_epoch_is_the_reference_loop_written_out(tmp_path, one_thread) -> None:
    """Epoch 1 against the reference's loop by hand: the seed's weights, pieces in the seed's
    shuffled order, one Adam step per piece on its mean frame NLL, gradients cleared and
    clipped each step: the same weights and validation NLL. Clipped at every step, and with a
    bound twice the largest gradient norm, which a summed (not averaged) NLL would exceed."""
    write_random_task(tmp_path, seed=8, pieces=3)
    data = load_poly_music("jsb", tmp_path)

    def reference(clip: float | None) -> tuple[torch.nn.Module, list[float], float]:
        """The model after one epoch, each step's gradient norm, the epoch's training NLL."""
        torch.manual_seed(9)
        model = PlainSeqUNet(PlainSeqUNetConfig(**TINY_PLAIN))
        optimizer, norms, nats, frames = torch.optim.Adam(model.parameters(), lr=0.01), [], 0.0, 0
        for i in np.random.default_rng(9).permutation(3):
            optimizer.zero_grad()
            logits = model.forward_from_start(data["train"][i][None, :, :-1])  # checked above
            target = data["train"][i][None, :, 1:]
            loss = F.binary_cross_entropy_with_logits(logits, target, reduction="mean").mul(88)
            nats, frames = nats + loss.item() * target.shape[-1], frames + target.shape[-1]
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip or math.inf)))
            optimizer.step()
        return model, norms, nats / frames

    for clip in (0.05, 2 * max(reference(None)[1])):
        out = tmp_path / f"clip{clip}"
        result = train_symbolic(tiny_run(tmp_path, out, lr=0.01, grad_clip=clip, epochs=1, seed=9))
        model, norms, train_nll = reference(clip)
        assert all(n > clip for n in norms) if clip == 0.05 else all(n < clip for n in norms)
        (log,) = read_log(out)
        assert log["train_nll"] == pytest.approx(train_nll, rel=1e-5)  # before each step
        trained, _ = load_checkpoint(out / "best")
        for name, value in model.state_dict().items():
            torch.testing.assert_close(trained.state_dict()[name], value, rtol=1e-5, atol=1e-6)
        assert result["valid_nll"] == pytest.approx(evaluate(model, data["valid"]), rel=1e-5)


def test_patience_stops_a_run_and_a_halved_rate_reaches_the_optimizer(tmp_path, monkeypatch) -> None:
    """With a learning rate of 0 nothing improves after epoch 1: patience 2 stops the run after
    epoch 3. With the plateau rule forced to halve every epoch, the optimizer's steps run at
    the rate, then half, then a quarter."""
    write_random_task(tmp_path, seed=6, pieces=2)
    config = tiny_run(tmp_path, tmp_path / "still", lr=0.0, epochs=6, patience=2)
    result = train_symbolic(config)
    assert (result["stopped"], result["epochs_run"], result["best_epoch"]) == ("early_stop", 3, 1)

    rates = []

    class Recording(torch.optim.Adam):
        def step(self, closure=None):
            rates.append(self.param_groups[0]["lr"])
            return super().step(closure)

    def halve(progress: _Progress, val: float, plateau: int) -> bool:
        progress.val_history.append(val)
        progress.lr /= 2
        return True

    monkeypatch.setattr(torch.optim, "Adam", Recording)
    monkeypatch.setattr(_Progress, "update_lr", halve)
    train_symbolic(dataclasses.replace(config, out_dir=str(tmp_path / "halved"), lr=0.01, epochs=3))
    assert rates == [0.01] * 2 + [0.005] * 2 + [0.0025] * 2  # two pieces an epoch


def test_evaluation_is_in_eval_mode_and_leaves_the_mode_as_it_was(rng: torch.Generator) -> None:
    """Dropout off while scoring (a TCN's dropout would make the NLL random), the training
    mode put back after."""
    model = PlainSeqUNet(PlainSeqUNetConfig(channels=4, levels=2, kernel_size=3, dropout=0.5))
    rolls = [(torch.rand(88, 9, generator=rng) < 0.2).float() for _ in range(2)]
    want = evaluate(model.eval(), rolls)
    model.train()
    assert evaluate(model, rolls) == want == evaluate(model, rolls) and model.training


def test_learning_rate_halves_on_the_reference_plateau_rule() -> None:
    progress = _Progress(lr=1.0)
    vals = [5.0, 4.0, 3.0, 2.9, 4.5, 5.1, 3.0]
    halved = [progress.update_lr(v, plateau=3) for v in vals]
    # from the fourth epoch on, halve when above the highest of the previous three
    assert halved == [False, False, False, False, True, True, False]
    assert progress.lr == 0.25
    for vals, want in (([1.0, 2.0, 3.0], [False, False, True]),  # as soon as there are `plateau`
                       ([1.0, 2.0, 2.0], [False, False, False])):  # equal to the highest is not above
        progress = _Progress(lr=1.0)
        assert [progress.update_lr(v, plateau=2) for v in vals] == want


# -- training ------------------------------------------------------------------------------------
def test_tiny_training_run_end_to_end(tmp_path, one_thread) -> None:
    """A few epochs on a learnable toy set: validation improves, the best weights and the result
    agree with an independent evaluation, an interrupted budget stops after one epoch."""
    rng = np.random.default_rng(2)

    def arpeggios(count: int) -> list[np.ndarray]:
        pieces = []
        for _ in range(count):
            roll = np.zeros((int(rng.integers(12, 20)), 88), np.uint8)
            start = int(rng.integers(0, 4))
            for t in range(roll.shape[0]):
                roll[t, 40 + (start + t) % 4] = 1
            pieces.append(roll)
        return pieces

    write_mat(tmp_path / "JSB_Chorales.mat",
              {"traindata": arpeggios(6), "validdata": arpeggios(3), "testdata": arpeggios(3)})
    out = tmp_path / "run"
    config = SymbolicTrainConfig(task="jsb", kind="plain_sequnet", out_dir=str(out), data=str(tmp_path),
                                 model=dict(channels=8, levels=2, kernel_size=3, dropout=0.0),
                                 lr=1e-2, epochs=5, seed=3)
    result = train_symbolic(config)
    log = read_log(out)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5] and result["epochs_run"] == 5
    assert min(r["valid_nll"] for r in log) < log[0]["valid_nll"] and result["stopped"] == "epochs"
    best = min(log, key=lambda r: r["valid_nll"])
    assert result["best_epoch"] == best["epoch"] and result["valid_nll"] == pytest.approx(best["valid_nll"])
    model, info = load_checkpoint(out / "best")
    data = load_poly_music("jsb", tmp_path)
    assert result["test_nll"] == pytest.approx(evaluate(model, data["test"]), rel=1e-6)
    assert result["params"] == model.num_parameters() and info.sample_rate == 0  # not audio
    assert json.loads((out / "result.json").read_text())["test_nll"] == result["test_nll"]

    budget = SymbolicTrainConfig(**{**config.to_dict(), "out_dir": str(tmp_path / "cut"), "time_budget_s": 1e-6})
    assert train_symbolic(budget)["stopped"] == "time_budget"
    assert len(read_log(tmp_path / "cut")) == 1

    # the same config again, into the same folder: the same run (seeded), a log of its own
    again = train_symbolic(config)
    same = ("test_nll", "valid_nll", "best_epoch", "epochs_run")
    assert {k: again[k] for k in same} == {k: result[k] for k in same}
    assert len(read_log(out)) == 5


def test_max_pieces_threads_and_the_budget_reach_the_run(tmp_path, monkeypatch) -> None:
    """``max_pieces`` cuts every split (training, validation and the final test), ``threads``
    sets torch's threads, and on a clock where each epoch takes 2 s a budget of 4 s runs two
    epochs (the second fits exactly) and stops (a third would overrun it)."""
    write_random_task(tmp_path, seed=5, pieces=4)
    threads, ticks = [], itertools.count()
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(symbolic, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    result = train_symbolic(tiny_run(tmp_path, tmp_path / "run", epochs=3, seed=4, threads=1,
                                     max_pieces=2, time_budget_s=4))
    assert threads == [1]
    log = read_log(tmp_path / "run")
    assert [(r["train_s"], r["epoch_s"], r["elapsed_s"]) for r in log] == [(1, 2, 2), (1, 2, 4)]
    assert (result["stopped"], result["train_seconds"]) == ("time_budget", 4)
    assert symbolic.evaluate_best(tmp_path / "run")["train_seconds"] == 4  # what an interrupted run reports
    model, _ = load_checkpoint(tmp_path / "run" / "best")
    data = load_poly_music("jsb", tmp_path)
    assert result["valid_nll"] == pytest.approx(evaluate(model, data["valid"][:2]), rel=1e-6)
    assert result["test_nll"] == pytest.approx(evaluate(model, data["test"][:2]), rel=1e-6)
