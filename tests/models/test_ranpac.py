"""model=ranpac: first-session adapters, random projection, Gram matrix, ridge selection and the
solved classifier, held to the original Mammoth's numbers (scripts/reference_feature_methods.py)."""

from __future__ import annotations

import torch
from feature_reference import ImageDataset, reference, script, tensor, tiny_vit

import mammoth.models.ranpac  # noqa: F401  registers model=ranpac
from mammoth.engine.context import build_context
from mammoth.models import build_model


def make_ranpac(seed: int = 0, net=None, **values):
    """ranpac on the script's tiny adapter ViT (width 768, 2 blocks) and benchmark."""
    settings = {key: value for key, value in reference()["ranpac"]["settings"].items()
                if key not in ("seeds", "dropout_seed")}
    dataset = ImageDataset()
    model = build_model("ranpac", net=tiny_vit("ranpac") if net is None else net, dataset=dataset,
                        **{**settings, **values})
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(seed)))
    return model


def test_ranpac_matches_the_originals_first_session_projection_ridge_and_logits() -> None:
    recorded = reference()["ranpac"]
    settings = recorded["settings"]
    model = make_ranpac()
    losses, logits = [], []
    for task in range(2):
        model.begin_task(task)
        if task == 0:
            with torch.no_grad():
                for index, adapter in enumerate(model.adapters):
                    for name, value in adapter.state_dict().items():
                        value.copy_(script().recipe_tensor(f"adapters.{index}.{name}", tuple(value.shape)))
                model.cosine_head.weight.copy_(tensor(recorded["initial_head"]))
            model.train()
            for step, (x, y) in enumerate(script().batches(0)):
                torch.manual_seed(settings["dropout_seed"] + step)  # the adapters' dropout, as the script seeds it
                losses.append(model.observe(x, y, x))
        model.context.generator.manual_seed(settings["seeds"][task])
        model.end_task(task, model.context.task_data(task))
        assert float(model.ridge) == recorded["ridges"][task]
        model.eval()
        with torch.no_grad():
            logits.append(model(script().probe_images()))
    assert torch.allclose(torch.tensor(losses), tensor(recorded["losses"]), atol=1e-5)
    assert torch.allclose(model.gram, tensor(recorded["gram"]), rtol=1e-4, atol=1e-3)
    assert torch.allclose(model.label_projection, tensor(recorded["label_projection"]), rtol=1e-4, atol=1e-4)
    for task, scores in enumerate(logits):
        seen = 2 * (task + 1)
        assert torch.allclose(scores[:, :seen], tensor(recorded["logits"][task]), rtol=1e-3, atol=1e-4)
        assert (scores[:, seen:] == float("-inf")).all()
