import json
import shutil

import numpy as np
import pytest

from helpers import crf

# Only where the optional package is genuinely absent (requirements.txt installs it for CI).
needs_densecrf = pytest.mark.skipif(not crf.available(),
                                    reason="pydensecrf2 is not installed: pip install '.[crf]'")


def edge_case(seed=0, height=60, width=80, edge=40, offset=6):
    """An image with a sharp colour edge, and a blurred, noisy unary whose edge is misplaced."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), dtype=np.uint8)
    truth[:, edge:] = 1
    image = np.zeros((height, width, 3), dtype=np.float32)
    image[:, :edge] = (200, 60, 40)
    image[:, edge:] = (40, 80, 200)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    x = np.arange(width)[None, :].repeat(height, 0)
    logit = (x - (edge + offset)) / 4.0 + rng.normal(0, 1.5, (height, width))
    foreground = 1 / (1 + np.exp(-logit))
    probabilities = np.stack([1 - foreground, foreground]).astype(np.float32)
    return image, probabilities, truth


@needs_densecrf
def test_crf_recovers_a_colour_edge_better_than_the_unary():
    image, probabilities, truth = edge_case()
    unary_error = (probabilities.argmax(0) != truth).mean()
    refined_error = (crf.refine(image, probabilities) != truth).mean()
    assert unary_error > 0.05
    assert refined_error < unary_error / 4


@needs_densecrf
def test_output_shape_dtype_and_determinism():
    image, probabilities, _ = edge_case(seed=1)
    first = crf.refine(image, probabilities)
    assert first.shape == (60, 80) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, crf.refine(image.copy(), probabilities.copy()))
    marginals = crf.mean_field(image, probabilities)
    assert marginals.shape == (2, 60, 80) and marginals.dtype == np.float32
    np.testing.assert_allclose(marginals.sum(0), 1.0, atol=1e-4)
    batch = crf.refine_batch(np.stack([image, image]), np.stack([probabilities, probabilities]))
    assert batch.shape == (2, 60, 80)
    np.testing.assert_array_equal(batch[1], first)


def test_bad_inputs_are_refused_with_the_expected_shape():
    image, probabilities, _ = edge_case()
    with pytest.raises(ValueError, match="uint8"):
        crf.refine(image.astype(np.float32), probabilities)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        crf.refine(image, probabilities[:, :-1])


def test_most_changed_window_finds_the_edit():
    before = np.zeros((50, 70), dtype=np.uint8)
    after = before.copy()
    after[30:40, 45:52] = 1
    after[2, 2] = 1
    top, left = crf.most_changed_window(before, after, 12, 10)
    assert 28 <= top <= 30 and 42 <= left <= 45
    assert crf.most_changed_window(before, before, 12, 10) == (0, 0)


def test_params_round_trip_and_scale():
    params = crf.CRFParams(gaussian_sxy=2.0, bilateral_sxy=50.0, iterations=5)
    assert crf.CRFParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    with pytest.raises(ValueError, match="bilateral_sxy"):
        crf.CRFParams.from_dict({"bilateral_xy": 3})
    doubled = params.for_size(720, 960)
    assert doubled.bilateral_sxy == pytest.approx(100.0) and doubled.gaussian_sxy == pytest.approx(4.0)
    assert doubled.bilateral_srgb == params.bilateral_srgb


@needs_densecrf
def test_parameter_search_is_reproducible():
    samples = [edge_case(seed=s, offset=o) for s, o in ((0, 6), (1, -5), (2, 8))]
    candidates = crf.candidate_params(5, seed=3, iterations=5)
    assert candidates[0].bilateral_sxy == crf.DEFAULT_PARAMS.bilateral_sxy
    assert candidates == crf.candidate_params(5, seed=3, iterations=5)
    assert candidates != crf.candidate_params(5, seed=4, iterations=5)
    first = crf.search_params(samples, 2, candidates)
    second = crf.search_params(samples, 2, crf.candidate_params(5, seed=3, iterations=5))
    assert first["best"] == second["best"]
    assert [t["miou"] for t in first["trials"]] == [t["miou"] for t in second["trials"]]
    assert first["best_miou"] == max(t["miou"] for t in first["trials"])
    assert first["best_miou"] > first["miou_without_crf"]


def test_params_for_checkpoint_reads_crf_json_or_falls_back(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    assert crf.params_for_checkpoint(checkpoint) == crf.DEFAULT_PARAMS
    chosen = crf.CRFParams(bilateral_sxy=60.0, iterations=5)
    (tmp_path / "crf.json").write_text(json.dumps({
        "params": chosen.to_dict(), "checkpoint_sha256": crf.file_digest(checkpoint)}))
    assert crf.params_for_checkpoint(checkpoint) == chosen
    # A bare parameter dict also works.
    (tmp_path / "crf.json").write_text(json.dumps(chosen.to_dict()))
    assert crf.params_for_checkpoint(checkpoint) == chosen
    # Chosen for another version of the checkpoint: ignored, with a warning.
    (tmp_path / "crf.json").write_text(json.dumps({
        "params": chosen.to_dict(), "checkpoint_sha256": "0" * 64}))
    with pytest.warns(UserWarning, match="choose_params"):
        assert crf.params_for_checkpoint(checkpoint) == crf.DEFAULT_PARAMS
    (tmp_path / "crf.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="crf.json"):
        crf.params_for_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def _smoke_model(smoke_checkpoint, tmp_path_factory):
    """The smoke checkpoint copied to a folder of its own (choose_params writes crf.json there)."""
    from helpers.checkpoint import load_model
    from helpers.data import build_datasets

    folder = tmp_path_factory.mktemp("crf_checkpoint")
    checkpoint = folder / "best.pt"
    shutil.copy(smoke_checkpoint, checkpoint)
    model, info = load_model(checkpoint)
    return checkpoint, model, build_datasets(info["config"])


@needs_densecrf
def test_choose_params_on_validation_saves_and_reuses_crf_json(_smoke_model):
    checkpoint, model, datasets = _smoke_model
    chosen = crf.choose_params(checkpoint, model, datasets["val"], max_images=2, count=3,
                               seed=0, iterations=2, progress=False)
    saved = json.loads((checkpoint.parent / "crf.json").read_text())
    assert saved["search"]["split"] == "val" and saved["val_images"] == 2
    assert len(saved["trials"]) == 3
    assert crf.params_for_checkpoint(checkpoint) == chosen["params"]
    again = crf.choose_params(checkpoint, model, datasets["val"], max_images=2, count=3,
                              seed=0, iterations=2, progress=False)
    assert again["params"] == chosen["params"] and again["seconds"] == saved["seconds"]


@needs_densecrf
def test_evaluation_with_crf_matches_the_evaluator_without_it(_smoke_model):
    from helpers.evaluate import evaluate

    _, model, datasets = _smoke_model
    test_set = datasets["test"]
    params = crf.CRFParams(iterations=2)
    result = crf.evaluate_with_crf(model, test_set, params, crf_indices=[0, 2], progress=False)
    assert result["without_crf"]["images"] == len(test_set)
    assert result["with_crf"]["images"] == result["without_crf_subset"]["images"] == 2
    assert result["crf_indices"] == [0, 2] and result["params"] == params.to_dict()
    reference = evaluate(model, test_set, batch_size=1, progress=False)
    np.testing.assert_array_equal(np.array(result["without_crf"]["confusion_matrix"]),
                                  reference["confusion_matrix"].numpy())
    assert result["without_crf"]["per_image_miou"] == pytest.approx(reference["per_image_miou"])
    assert 0 <= result["with_crf"]["boundary"]["bf"] <= 1
    assert result["crf_ms"] > 0 and result["forward_ms"] > 0
    # Same pixels scored with and without the CRF on the subset.
    assert result["with_crf"]["pixels"] == result["without_crf_subset"]["pixels"]
    # Scoring only some images scores exactly those.
    part = crf.evaluate_with_crf(model, test_set, params, indices=[1, 2], crf_indices=[0, 2],
                                 progress=False)
    assert part["without_crf"]["images"] == 2 and part["crf_indices"] == [2]
    np.testing.assert_array_equal(
        np.array(part["with_crf"]["confusion_matrix"]),
        np.array(crf.evaluate_with_crf(model, test_set, params, indices=[2], progress=False)
                 ["with_crf"]["confusion_matrix"]))
    # The CRF path reuses the inference path's probabilities.
    image, _ = test_set.load(0)
    probabilities = crf.softmax_probabilities(model, image)
    assert probabilities.shape == (11, *image.shape[:2])
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(crf.predict_with_crf(model, image, params),
                                  crf.refine(image, probabilities, params))


def test_a_missing_crf_package_gets_install_instructions(monkeypatch, smoke_checkpoint, tmp_path,
                                                         capsys):
    import sys

    from helpers.predict import main as predict_main

    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # import fails as if never installed
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    image, probabilities, _ = edge_case()
    with pytest.raises(RuntimeError, match=r"pip install '\.\[crf\]'"):
        crf.refine(image, probabilities)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "photo.png")
    assert predict_main([str(tmp_path / "photo.png"), "--checkpoint", str(smoke_checkpoint),
                         "--out", str(tmp_path / "out"), "--crf", "--no-progress"]) == 2
    assert "pydensecrf2" in capsys.readouterr().err
