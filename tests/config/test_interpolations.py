"""What an interpolation depends on, read from the raw config (mammoth.config.interpolations): the
safety gate refuses an output path that reads the environment, and a run's record keeps such a
value as written; both rely on never missing a resolver, however it is reached."""

from __future__ import annotations

import pytest

from mammoth.config.interpolations import UNKNOWN, raw_lookup, resolvers_used

TREE = {
    "secret": "${oc.env:SECRET}",
    "spaced": "${ oc.env : SECRET }",
    "dataset": {"root": "data-${secret}", "copy": "${.root}", "up": "${..secret}", "listed": ["${oc.env:X}", "plain"]},
    "selected": "${oc.select:dataset.root,fallback}",
    "relative_select": {"a": "${oc.env:Y}", "b": "${oc.select:.a}"},
    "whole": "${dataset}",
    "hydra": {"job": {"name": "${oc.env:SLURM_JOB_NAME,x}", "num": 0}, "runtime": {"output_dir": "/run"}},
    "log": "${hydra:runtime.output_dir}/${hydra:job.name}.log",
    "clean": "${hydra:runtime.output_dir}/${now:%H}/${hydra.job.num}",
    "dynamic_name": "${${secret}:X}",
    "dynamic_key": "${dataset.${secret}}",
    "cycle_a": "${cycle_b}",
    "cycle_b": "${cycle_a}",
    "nested": "${now:${secret}}",
}


@pytest.mark.parametrize("key, expected", [
    (("secret",), {"oc.env"}),
    (("spaced",), {"oc.env"}),
    (("dataset", "root"), {"oc.env"}),  # through the key it references
    (("dataset", "copy"), {"oc.env"}),  # a sibling, relative
    (("dataset", "up"), {"oc.env"}),  # one level up
    (("selected",), {"oc.select", "oc.env"}),  # a resolver that reads a key
    (("relative_select", "b"), {"oc.select", "oc.env"}),
    (("whole",), {"oc.env"}),  # a whole node: every value in it
    (("log",), {"hydra", "oc.env"}),  # ${hydra:KEY} reads the Hydra node's KEY
    (("clean",), {"hydra", "now"}),
    (("dynamic_name",), {UNKNOWN, "oc.env"}),
    (("dynamic_key",), {UNKNOWN, "oc.env"}),
    (("cycle_a",), set()),
    (("nested",), {"now", "oc.env"}),
])
def test_every_resolver_a_value_reaches_is_found(key, expected):
    value = raw_lookup(TREE)(key)
    assert resolvers_used(value, key, raw_lookup(TREE)) == expected
