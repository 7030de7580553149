"""Checkpoints load with weights_only=True: plain data in, arbitrary code refused everywhere."""

import random

import numpy as np
import pytest
import torch

from helpers import checkpoint
from helpers.errors import CheckpointError


class _WritesAFile:
    """Unpickling this object writes a file: what a malicious checkpoint would do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return exec, (f"open({self.target!r}, 'w').write('code ran')",)


@pytest.fixture
def crafted(tmp_path):
    """A checkpoint in the project's format whose unpickling would write ``owned.txt``."""
    target = tmp_path / "owned.txt"
    path = tmp_path / "crafted.pt"
    torch.save({"format": checkpoint.FORMAT, "model": {"name": "unet-effnet-lite0"},
                "state_dict": {}, "x_payload": _WritesAFile(target)}, path)
    return path, target


def test_a_checkpoint_that_runs_code_is_refused_by_the_loader(crafted):
    path, target = crafted
    assert issubclass(checkpoint.UnsafeCheckpointError, CheckpointError)
    with pytest.raises(checkpoint.UnsafeCheckpointError, match="builtins.exec") as error:
        checkpoint.read_checkpoint(path)
    assert str(path) in str(error.value) and "arbitrary code" in str(error.value)
    with pytest.raises(checkpoint.UnsafeCheckpointError):
        checkpoint.load_model(path)
    assert not target.exists()
    # The file really is dangerous: the unsafe loader runs it.
    torch.load(path, weights_only=False)
    assert target.read_text() == "code ran"


def test_every_command_refuses_a_checkpoint_that_runs_code(crafted, tmp_path, capsys):
    from helpers.evaluate import main as evaluate_main
    from helpers.export import main as export_main
    from helpers.predict import main as predict_main
    from helpers.webapp.__main__ import main as webapp_main

    path, target = crafted
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (32, 24), (10, 20, 30)).save(photo)
    runs = {
        "predict": lambda: predict_main([str(photo), "--checkpoint", str(path),
                                         "--out", str(tmp_path / "out"), "--no-progress"]),
        "evaluate": lambda: evaluate_main(["--checkpoint", str(path)]),
        "export": lambda: export_main(["--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")]),
        "webapp": lambda: webapp_main(["--checkpoint", str(path), "--port", "0"]),
    }
    for name, run in runs.items():
        assert run() == 2, name
        err = capsys.readouterr().err
        assert "refused to load" in err and str(path) in err, (name, err)
        assert not target.exists(), name
    from helpers.webapp.app import create_app

    with pytest.raises(checkpoint.UnsafeCheckpointError):
        create_app(str(path))
    assert not target.exists()




def test_random_generator_state_round_trips_through_a_safe_checkpoint(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    state = checkpoint.rng_state()
    expected = (random.random(), np.random.standard_normal(3), torch.rand(3))
    torch.save({"rng": state}, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]  # no allow-list needed
    checkpoint.set_rng_state(loaded)
    assert random.random() == expected[0]
    np.testing.assert_array_equal(np.random.standard_normal(3), expected[1])
    torch.testing.assert_close(torch.rand(3), expected[2])


def test_a_last_checkpoint_in_the_older_format_still_loads_and_restores(smoke_run, tmp_path):
    """Older ``last.pt`` files hold NumPy arrays (RNG state) and torch's version object."""
    payload = checkpoint.read_checkpoint(smoke_run.last_checkpoint)
    assert type(payload["versions"]["torch"]) is str
    payload["versions"]["torch"] = torch.__version__  # a TorchVersion, as older files hold
    assert payload["training_state"]["optimizer"]["state"]  # AdamW moments travel too
    np.random.seed(11)
    random.seed(12)
    payload["training_state"]["rng"] = {"torch": torch.get_rng_state(),
                                        "numpy": np.random.get_state(),
                                        "python": random.getstate()}
    expected = (np.random.random_sample(2), random.random())
    torch.save(payload, tmp_path / "last.pt")
    old = checkpoint.read_checkpoint(tmp_path / "last.pt")
    checkpoint.set_rng_state(old["training_state"]["rng"])
    np.testing.assert_array_equal(np.random.random_sample(2), expected[0])
    assert random.random() == expected[1]
