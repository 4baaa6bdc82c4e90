"""The mixed open-world pool: loads offline, reports its sources, labels read source:class, the
Knockoff hierarchy puts the sources above the classes, and it is registered for configs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from stealkit.attacks.knockoff import build_hierarchy
from stealkit.data import dataset_names, load_dataset
from stealkit.data.mixed import FOOLBOX_KINDS, grey_uint8, mixed_open_world, source_counts
from stealkit.data.pool import QueryPool
from stealkit.data.registry import describe_dataset
from stealkit.oracle import InputSpec

pytestmark = pytest.mark.skipif(
    not (
        Path("/usr/share/datasets/fashion-mnist").is_dir()
        and importlib.util.find_spec("foolbox")
        and importlib.util.find_spec("skimage")
    ),
    reason="needs dataset-fashion-mnist, foolbox and scikit-image (scripts/setup.sh)",
)
SMALL = {"fashion": 30, "photos": 40, "digits": 12}


@pytest.fixture(scope="module")
def pool():
    return load_dataset("mixed-open-world", "all", **SMALL)


def test_it_reports_its_sources(pool):
    counts = {"fashion": 30, "photo": 40, "foolbox": 100, "digits": 12}
    assert source_counts(pool) == counts
    assert pool.meta["sources"] == "fashion=30, photo=40, foolbox=100, digits=12"
    assert tuple(pool.x.shape) == (182, 1, 28, 28) and pool.x.dtype == torch.uint8
    assert len(pool.classes) == int(pool.y.max()) + 1
    assert all(c.split(":")[0] in counts for c in pool.classes)
    foolbox = [i for i, c in enumerate(pool.classes) if c.startswith("foolbox:")]
    per_kind = torch.bincount(pool.y, minlength=len(pool.classes))[foolbox]
    assert per_kind.tolist() == [20] * len(FOOLBOX_KINDS)  # all 100, 20 of each data set


def test_sources_keep_their_images_and_classes(pool):
    fashion = load_dataset("fashion-mnist", "train").limit(30, 0)
    assert torch.equal(pool.x[:30], fashion.x)  # already grey 28x28: unchanged
    assert [pool.classes[i] for i in pool.y[:30]] == [
        f"fashion:{fashion.classes[i]}" for i in fashion.y
    ]
    digits = load_dataset("digits", "all").limit(12, 0)
    assert torch.equal(pool.x[-12:], grey_uint8(digits.images(), 28))  # upscaled 8x8 -> 28x28
    assert [pool.classes[i] for i in pool.y[-12:]] == [f"digits:{int(d)}" for d in digits.y]
    crops = pool.x[30:70].float()
    assert crops.std() > 10  # real photo crops, not blank


def test_seeded_and_validated(pool):
    again = mixed_open_world("all", None, **SMALL)
    assert torch.equal(again.x, pool.x) and torch.equal(again.y, pool.y)
    other = mixed_open_world("all", None, **SMALL, seed=1)
    assert not torch.equal(other.x, pool.x)
    with pytest.raises(ValueError, match="photos"):
        mixed_open_world("all", None, photos=-1)
    only = mixed_open_world("all", None, fashion=0, photos=0, digits=5, foolbox=False)
    assert source_counts(only) == {"digits": 5}


def test_hierarchy_has_a_source_level(pool):
    tree = build_hierarchy(QueryPool(pool, InputSpec(channels=1, height=28, width=28)))
    assert tree.names == sorted(source_counts(pool))
    assert tree.leaf_names is not None
    for name, group in zip(tree.names, tree.groups, strict=True):
        assert {tree.leaf_names[i].split(":")[0] for i in group} == {name}
        assert sum(len(tree.leaves[i]) for i in group) == source_counts(pool)[name]


def test_registered_for_configs():
    assert "mixed-open-world" in dataset_names()
    d = describe_dataset("mixed-open-world")
    assert d.available and (d.channels, d.height, d.width) == (1, 28, 28) and d.labelled
    assert d.images == {"all": 20400}  # 10k Fashion + 10k crops + 100 foolbox + 300 digits
