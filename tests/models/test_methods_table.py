"""The domain-IL column of the methods table (docs/methods.md) is what each method does when it is
built on a domain-IL dataset: it builds, or it is refused in one line naming the setting."""

from __future__ import annotations

from docs_pages import methods_table

#: The arguments a method requires (only those of its schema are passed); small pools for the prompt methods.
REQUIRED = {"buffer_size": 10, "alpha": 0.3, "beta": 0.5, "e_lambda": 1.0, "gamma": 1.0, "c": 1.0, "xi": 1.0,
            "pool_size": 4, "adapter_size": 0}


class DomainData:
    """A domain-IL dataset's static facts: 2 tasks of the same 4 classes, 3x8x8 inputs."""

    name, setting, n_classes, n_tasks, n_classes_per_task = "fake-domain", "domain-il", 4, 2, 4
    input_shape = (3, 8, 8)

    class config:
        batch_size, n_epochs = 8, 1

    def task_classes(self, task: int) -> range:
        return range(4)


def test_the_domain_il_column_is_what_each_method_does_on_a_domain_il_dataset() -> None:
    from mammoth.backbones import build_backbone
    from mammoth.errors import ConfigError
    from mammoth.models import MODELS, build_model

    rows = methods_table()
    assert set(rows) == set(MODELS.names())
    answers = {}
    for name in MODELS.names():
        # the built-in ViT serves every method, the prompt methods' token interface included
        net = build_backbone("vit", num_classes=4, input_shape=(3, 8, 8), patch_size=4, width=8, depth=5, heads=1)
        fields = set(MODELS.get(name).schema.__dataclass_fields__)
        try:
            build_model(name, net=net, dataset=DomainData(), **{k: v for k, v in REQUIRED.items() if k in fields})
            answers[name] = "yes"
        except ConfigError as error:
            assert "domain-il" in str(error) and "\n" not in str(error), (name, str(error))
            answers[name] = "refused"
    assert {name: row["domain-IL"] for name, row in rows.items()} == answers
    assert set(answers.values()) == {"yes", "refused"}
