import itertools
import pickle

import pytest
import torch

from fairquant.errors import CheckpointError, ConfigError
from fairquant.models import ModelSpec, predict_logits
from fairquant.train import TrainConfig, fit, load_checkpoint, save_checkpoint
from fairquant.train.loop import batch_bounds


def test_training_is_deterministic(tiny_dataset):
    config = TrainConfig(epochs=2, batch_size=8, seed=7)
    a, ha = fit(tiny_dataset, ModelSpec("cnn", 4), config, show_progress=False)
    b, hb = fit(tiny_dataset, ModelSpec("cnn", 4), config, show_progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert ha.epoch_loss == hb.epoch_loss and len(ha.epoch_loss) == 2
    c, _ = fit(
        tiny_dataset,
        ModelSpec("cnn", 4),
        TrainConfig(epochs=2, batch_size=8, seed=8),
        show_progress=False,
    )
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_training_reduces_loss(tiny_dataset):
    _, history = fit(
        tiny_dataset,
        ModelSpec("cnn", 8),
        TrainConfig(epochs=15, batch_size=10, optimizer="adamw", lr=0.01),
        show_progress=False,
    )
    assert history.epoch_loss[-1] < 0.5 * history.epoch_loss[0]
    assert history.images_per_second > 0


def test_batch_bounds_never_leave_a_single_sample():
    for n in range(2, 40):
        for bs in (2, 3, 8):
            b = batch_bounds(n, bs)
            sizes = [hi - lo for lo, hi in itertools.pairwise(b)]
            assert sum(sizes) == n and min(sizes) >= 2


def test_bad_train_config():
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=1)
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)


def test_checkpoint_round_trip(tiny_dataset, tmp_path):
    config = TrainConfig(epochs=1, batch_size=8)
    model, history = fit(tiny_dataset, ModelSpec("resnet18", 4), config, show_progress=False)
    path = save_checkpoint(
        tmp_path / "sub" / "ck.pt",
        model=model,
        model_spec=ModelSpec("resnet18", 4),
        dataset=tiny_dataset,
        train_config=config,
        history=history,
    )
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # no temporary file left
    ck = load_checkpoint(path)
    assert ck.model_spec == ModelSpec("resnet18", 4)
    assert ck.data_spec == tiny_dataset.spec and ck.train_config == config
    assert ck.classes == ["a", "b", "c"] and ck.group_names == ["a", "b", "c"]
    assert ck.history["epoch_loss"] == history.epoch_loss
    x = tiny_dataset.test.x
    assert torch.equal(predict_logits(ck.model, x), predict_logits(model, x))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_foreign_checkpoints(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="not a fairquant checkpoint"):
        load_checkpoint(plain)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"cannot be read by torch\.load"):
        load_checkpoint(text)
    # a pickled object is refused by weights_only loading: nothing in the file runs
    evil = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(evil)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"format": "fairquant-checkpoint"}))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


def test_damaged_checkpoint(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"format": "fairquant-checkpoint", "version": 1, "model": {"name": "cnn"}}, path)
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)
    torch.save({"format": "fairquant-checkpoint", "version": 99}, path)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path)


def test_fit_refuses_feature_rows_with_a_clear_error():
    """A table's (N, F) rows cannot train the zoo's image models: say so, naming the dataset."""
    import pytest
    import torch

    from fairquant.data.base import DataSpec, GroupedDataset, Split
    from fairquant.errors import ConfigError
    from fairquant.models import ModelSpec
    from fairquant.train import TrainConfig, fit

    rows = Split(torch.randn(8, 3), torch.tensor([0, 1] * 4), torch.tensor([0] * 4 + [1] * 4))
    data = GroupedDataset(
        DataSpec("table"), rows, rows, ["a", "b"], ["g0", "g1"], "y", "g", (0.0,), (1.0,)
    )
    with pytest.raises(ConfigError, match=r"dataset 'table' holds feature rows \(3,\)"):
        fit(data, ModelSpec("cnn", 4), TrainConfig(epochs=1), show_progress=False)


def test_the_held_out_validation_split_is_rebuilt_from_the_checkpoint(tiny_dataset, tmp_path):
    from fairquant.data import validation_split
    from fairquant.train import held_out_validation

    config = TrainConfig(epochs=1, batch_size=16, val_size=0.25, seed=3)
    model, _ = fit(tiny_dataset, ModelSpec("cnn", 4), config, show_progress=False)
    path = save_checkpoint(
        tmp_path / "m.pt",
        model=model,
        model_spec=ModelSpec("cnn", 4),
        dataset=tiny_dataset,
        train_config=config,
    )
    ckpt = load_checkpoint(path)
    val, note = held_out_validation(ckpt, tiny_dataset)
    want = validation_split(tiny_dataset.train, 0.25, seed=3)[1]
    assert torch.equal(val.x, want.x) and torch.equal(val.g, want.g)
    assert "held out of training" in note
    with pytest.raises(ConfigError, match=r"val_size=0\.25"):
        held_out_validation(ckpt, tiny_dataset, size=0.5)
    ckpt.train_config = TrainConfig(epochs=1)
    with pytest.raises(ConfigError, match="without a validation split"):
        held_out_validation(ckpt, tiny_dataset)
    carved, note = held_out_validation(ckpt, tiny_dataset, size=10)
    assert len(carved) == 10 and "trained on them" in note


def test_fit_checkpoint_sizes_trains_and_writes(tiny_dataset, tmp_path):
    from fairquant.train import fit_checkpoint

    config = TrainConfig(epochs=1, batch_size=8)
    path, history = fit_checkpoint(
        tmp_path / "ck.pt", tiny_dataset, ModelSpec("vit_small", 8), config, show_progress=False
    )
    ck = load_checkpoint(path)
    assert ck.model_spec.image_size == 8  # sized for the data, so the checkpoint rebuilds it
    assert ck.train_config == config and ck.history["epoch_loss"] == history.epoch_loss
    model, _ = fit(tiny_dataset, ck.model_spec, config, show_progress=False)
    x = tiny_dataset.test.x
    assert torch.equal(predict_logits(ck.model, x), predict_logits(model, x))
