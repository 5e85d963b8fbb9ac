"""The `nn` nebula classifier: three classes (HII, AGN, SNR), the context fold, and the
shipped weights' metrics re-measured (not copied) from the grids they were measured on."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from skyledger.compute.classification import nn as nn_module
from skyledger.compute.classification.diagnostic import CLASSES
from skyledger.compute.classification.nn import GALAXY, NEBULA, NN_CLASSES, classify_nn, load_model, weights_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A textbook shock (issue 26): [SII]/Ha 0.9, [OI]/Ha 0.3, [NII]/Ha 0.8, [OIII]/Hb 3, Ha/Hb 2.86;
# DIAGNOSTIC_LINES order (Hb, [OIII], [OI], Ha, [NII], [SII]6716, [SII]6731), Hb = 100.
HA = 286.0
SHOCK = [100.0, 300.0, 0.3 * HA, HA, 0.8 * HA, 0.9 * HA * 0.55, 0.9 * HA * 0.45]


def _training_script():
    """``scripts/train_nebula_nn.py`` of this checkout (scripts are not in the wheel)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "train_nebula_nn.py"
    spec = importlib.util.spec_from_file_location("train_nebula_nn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _batch(rows: list[list[float]], snr: float = 50.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    f = torch.tensor(rows, dtype=torch.float64)
    return f, f / snr, torch.full((len(rows),), math.nan, dtype=torch.float64)


def test_shipped_weights_load_with_three_outputs():
    model, rmin, rmax = load_model()
    blob = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert tuple(blob["classes"]) == NN_CLASSES == ("HII", "AGN", "SNR")
    x = torch.zeros(2, len(nn_module.FEATURE_NAMES))
    assert model(x).shape == (2, 3)
    assert rmin.shape == rmax.shape == (4,) and bool((rmin < rmax).all())
    assert weights_path().stat().st_size < 200_000  # the weights stay small


def test_textbook_shock_is_snr_in_a_nebula_and_agn_in_a_galaxy():
    f, e, ew = _batch([SHOCK, SHOCK])
    res = classify_nn(f, e, ew, 3.0, "cpu", context=torch.tensor([NEBULA, GALAXY]))
    neb, gal = res.probabilities.tolist()
    i = {c: CLASSES.index(c) for c in ("HII", "AGN", "SNR")}
    assert CLASSES[int(res.classes[0])] == "SNR" and neb[i["SNR"]] > 0.5
    # Galaxy context: no SNR class; its probability is absorbed by AGN (non-stellar ionisation).
    assert CLASSES[int(res.classes[1])] == "AGN" and math.isnan(gal[i["SNR"]])
    assert gal[i["AGN"]] == pytest.approx(neb[i["AGN"]] + neb[i["SNR"]], abs=1e-6)
    assert gal[i["HII"]] == pytest.approx(neb[i["HII"]], abs=1e-6)
    assert gal[i["HII"]] + gal[i["AGN"]] == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(neb[CLASSES.index("PN")]) and math.isnan(neb[CLASSES.index("DIG")])


def test_no_context_means_galaxy_and_a_bad_context_is_refused():
    f, e, ew = _batch([SHOCK])
    default = classify_nn(f, e, ew, 3.0, "cpu")
    galaxy = classify_nn(f, e, ew, 3.0, "cpu", context=torch.tensor([GALAXY]))
    assert torch.equal(default.classes, galaxy.classes)
    assert torch.allclose(default.probabilities, galaxy.probabilities, equal_nan=True)
    with pytest.raises(ValueError, match="0 \\(galaxy\\) or 1 \\(nebula\\)"):
        classify_nn(f, e, ew, 3.0, "cpu", context=torch.tensor([2]))
    with pytest.raises(ValueError, match="one per spectrum"):
        classify_nn(f, e, ew, 3.0, "cpu", context=torch.tensor([0, 1]))


def test_training_features_are_the_inference_features():
    """The script trains on nn.features and measures through the same fold as classify_nn:
    on one synthetic batch, the script's probabilities are classify_nn's."""
    script = _training_script()
    assert script.features is nn_module.features and script.in_context is nn_module.in_context
    fam = script.families(script.GRID_DIR / "allen08_shock.csv.gz")
    flux = np.concatenate([fam[c][1] for c in NN_CLASSES])
    label = np.concatenate([np.full(len(fam[c][1]), i) for i, c in enumerate(NN_CLASSES)])
    f, e, _, _ = script.synthesise(flux, label, 300, np.random.default_rng(0))
    model = load_model()[0]
    for context in (NEBULA, GALAXY):
        ours = script._probabilities(model, NN_CLASSES, f, e, nebula=context == NEBULA)
        res = classify_nn(torch.from_numpy(f), torch.from_numpy(e), torch.full((len(f),), math.nan), 3.0, "cpu",
                          context=torch.full((len(f),), context))  # fmt: skip
        decided = res.classes.numpy() != CLASSES.index("UNKNOWN")
        got = res.probabilities[:, [CLASSES.index(c) for c in NN_CLASSES]].numpy()
        if context == GALAXY:
            got[:, 2] = 0.0  # NaN in the table: no SNR class in a galaxy
        assert decided.mean() > 0.9
        np.testing.assert_allclose(got[decided], ours[decided], atol=1e-6)


def test_out_of_family_metrics_are_what_the_shipped_weights_give():
    """nebula_nn.metrics.json's held-out numbers (the model card's tables) re-measured from the
    shipped weights on the grids in tests/data/nebula_grids."""
    script = _training_script()
    shipped = json.loads(weights_path().with_suffix(".metrics.json").read_text())["out_of_family"]
    measured = script.out_of_family(load_model()[0])
    assert set(measured) == set(shipped) >= {"allen08_s_heldout_series", "allen08_sp_heldout_series", *script.OTHER_CODE_HII}
    for name, card in shipped.items():
        now = measured[name]
        assert now["sha256"] == card["sha256"], f"{name}: the grid changed, re-run scripts/train_nebula_nn.py --evaluate-only"
        for context in ("nebula", "galaxy"):
            for key in ("accuracy", "ece", "mean_p_true"):
                assert now[context][key] == pytest.approx(card[context][key], abs=0.005), (name, context, key)
            for c, frac in card[context]["fraction"].items():
                assert now[context]["fraction"][c] == pytest.approx(frac, abs=0.005), (name, context, c)


def test_validation_metrics_are_what_the_shipped_weights_give():
    """The validation numbers (held-out models of the training families) re-measured, and the
    card's guards on them."""
    script = _training_script()
    shipped = json.loads(weights_path().with_suffix(".metrics.json").read_text())["held_out"]["bins"]
    measured = script.evaluate(load_model()[0])["bins"]
    for card, now in zip(shipped, measured, strict=True):
        assert now["snr_ha"] == card["snr_ha"]
        for key in ("nn_accuracy", "nn_ece", "nn_galaxy_accuracy", "nn_galaxy_ece"):
            assert now[key] == pytest.approx(card[key], abs=0.005), key
        assert np.asarray(now["nn_confusion"]["counts"]).sum() == now["n"]
        # Guards of the model card (set after the first measurement, see there).
        assert now["nn_ece"] < 0.06 and now["nn_galaxy_ece"] < 0.06
        if now["snr_ha"][0] >= 10:
            assert now["nn_galaxy_accuracy"] >= 0.84
            assert min(now["nn_recall"].values()) >= 0.5
