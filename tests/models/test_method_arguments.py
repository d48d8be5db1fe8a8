"""The new methods' config fields: the original Mammoth's argument names, types and defaults."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pytest

from mammoth.models import MODELS

#: A rehearsal method's memory: a fixed total (buffer_size) or a memory per class seen, one of the two.
REPLAY = {"buffer_size": (Optional[int], None), "memory_per_class": (Optional[int], None),
          "minibatch_size": (Optional[int], None), "buffer_device": (str, "training")}
#: A method whose memory has a fixed size: buffer_size required (memory_per_class refused when built).
FIXED = {"buffer_size": (int, "???"), "memory_per_class": (Optional[int], None),
         "minibatch_size": (Optional[int], None), "buffer_device": (str, "training")}
#: The rehearsal methods whose steps each go through step() take a regulariser (+model/regularizer=NAME).
REGULARIZED = {**REPLAY, "regularizer": (Optional[dict[str, Any]], None)}
#: Each method's own fields (beyond those every method has: lr, optimizer, momentum, ...).
EXPECTED = {
    "lwf": {"alpha": (float, 0.5), "softmax_temp": (float, 2.0)},
    "lwf_mc": {"wd_reg": (float, 0.0)},
    "ewc_on": {"e_lambda": (float, "???"), "gamma": (float, "???")},
    "si": {"c": (float, "???"), "xi": (float, "???")},
    "agem": REPLAY,
    "agem_r": REPLAY,
    "rpc": FIXED,
    "er_ace_aer_abs": {**FIXED, "sample_selection_strategy": (str, "abs"), "use_aer": (bool, True),
                       "alpha_sample_insertion": (float, 0.75)},
    "hal": {**FIXED, "hal_lambda": (float, 0.1), "beta": (float, 0.5), "gamma": (float, 0.1), "steps_on_anchors": (int, 100),
            "finetuning_epochs": (int, 1), "paper_anchors": (bool, False)},
    "gss": {**FIXED, "batch_num": (int, 1), "gss_minibatch_size": (Optional[int], None)},
    "fdr": FIXED,  # the original's required --alpha is never read: none here
    "gem": {**REPLAY, "gamma": (float, 0.5)},
    "icarl": {**REGULARIZED, "opt_wd": (float, 1e-5)},
    "lucir": {**REPLAY, "lamda_base": (float, 5.0), "lamda_mr": (float, 1.0), "k_mr": (int, 2), "mr_margin": (float, 0.5),
              "fitting_epochs": (int, 20), "lr_finetune": (float, 0.01), "imprint_weights": (bool, True)},
    "er_ace": {**REGULARIZED, "task_free": (bool, False), "use_custom_classifier": (bool, True)},
    "gdumb": {"buffer_size": (Optional[int], None), "memory_per_class": (Optional[int], None), "maxlr": (float, 0.05), "minlr": (float, 0.0005),
              "fitting_epochs": (int, 256), "cutmix_alpha": (Optional[float], 1.0),
              "sampler": (str, "reservoir")},
    "bic": {**REGULARIZED, "bic_epochs": (int, 250), "temp": (float, 2.0), "valset_split": (float, 0.1),
            "wd_reg": (Optional[float], None), "distill_after_bic": (bool, True)},
    "mer": {**REPLAY, "beta": (float, "???"), "gamma": (float, "???"), "batch_num": (int, 1)},
    "xder": {**FIXED, "regularizer": (Optional[dict[str, Any]], None), "alpha": (float, "???"), "beta": (float, "???"), "gamma": (float, 0.85),
             "constr_eta": (float, 0.1), "constr_margin": (float, 0.3), "past_constraint": (bool, False),
             "future_constraint": (bool, True), "align_bn": (bool, True)},
}


def _fields(name: str) -> dict:
    return {field.name: (field.type, field.default) for field in dataclasses.fields(MODELS.get(name).schema)
            if field.name != "_target_"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_method_fields_match_the_original(name: str) -> None:
    common = _fields("sgd")
    own = {key: value for key, value in _fields(name).items() if key not in common}
    assert own == EXPECTED[name]
    assert set(common) <= set(_fields(name))
