"""`stealkit verify` end to end on tiny files, its clean errors, and the model files it reads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from stealkit.cli import main
from stealkit.data import load_dataset
from stealkit.errors import ConfigError
from stealkit.experiments.verify import default_private, parse_part
from stealkit.models import build_model
from stealkit.models.encoder import FeatureEncoder, SurrogateEncoder
from stealkit.models.files import load_model, read_metadata, save_model
from stealkit.oracle import InputSpec
from stealkit.train import fit
from stealkit.victims import Victim

X8 = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _net(arch: str = "cnn2-small", classes: int = 10, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, in_channels=1, num_classes=classes, image_size=8).eval()


@pytest.mark.parametrize(
    ("arch", "make"),
    [
        ("cnn2-small", lambda: _net()),
        ("cnn2-small", lambda: FeatureEncoder(_net()).eval()),
        ("cnn2-small", lambda: SurrogateEncoder(_net(classes=2), (1, 8, 8), 16).eval()),
        ("mlp", lambda: SurrogateEncoder(_net("mlp", classes=2), (1, 8, 8), 256).eval()),
    ],
    ids=["classifier", "features", "surrogate-encoder", "identity-projection"],
)
def test_a_saved_model_loads_back_answering_the_same(tmp_path: Path, arch: str, make) -> None:
    model = make()
    with torch.no_grad():
        model(X8)  # batch-norm statistics stay as they are in eval mode
        out = model(X8)
    path = save_model(
        model,
        tmp_path / "m.safetensors",
        arch=arch,
        in_channels=1,
        num_classes=out.shape[1],
        image_size=8,
        extra={"attack": "knockoff"},
    )
    meta = read_metadata(path)
    assert meta["num_classes"] == str(out.shape[1]) and meta["attack"] == "knockoff"
    back = load_model(path)
    assert not back.training
    with torch.no_grad():
        assert torch.equal(back(X8), out)


def test_save_model_refuses_a_wrong_output_size_and_clashing_metadata(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not num_classes=7"):
        save_model(_net(), tmp_path / "a.safetensors", arch="cnn2-small", in_channels=1,
                   num_classes=7, image_size=8)  # fmt: skip
    with pytest.raises(ValueError, match="may not set"):
        save_model(_net(), tmp_path / "a.safetensors", arch="cnn2-small", in_channels=1,
                   num_classes=10, image_size=8, extra={"arch": "mlp"})  # fmt: skip


def test_bare_state_dicts_need_their_settings_and_the_right_arch(tmp_path: Path) -> None:
    net = _net()
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(bare))
    with pytest.raises(ConfigError, match="does not record arch.*--arch"):
        load_model(bare)
    back = load_model(bare, arch="cnn2-small", in_channels=1, num_classes=10, image_size=8)
    with torch.no_grad():
        assert torch.equal(back(X8), net(X8))
    with pytest.raises(ConfigError, match="do not fit arch 'mlp'"):
        load_model(bare, arch="mlp", in_channels=1, num_classes=10, image_size=8)
    with pytest.raises(ConfigError, match="cannot be built for 1 x 8 x 8"):
        load_model(bare, arch="lenet5", in_channels=1, num_classes=10, image_size=8)
    saved = save_model(net, tmp_path / "s.safetensors", arch="cnn2-small", in_channels=1,
                       num_classes=10, image_size=8)  # fmt: skip
    with pytest.raises(ConfigError, match="saved with arch=cnn2-small, but arch=mlp"):
        load_model(saved, arch="mlp")
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")


def test_onnx_files_load_as_modules(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (X8,), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(X8), net(X8), rtol=0, atol=1e-5)


def test_data_flags_and_the_victims_own_training_data() -> None:
    part = parse_part("fashion-mnist:train:0:30000", flag="--private")
    assert (part.dataset, part.split, part.start, part.stop) == ("fashion-mnist", "train", 0, 30000)
    assert parse_part("digits:test", flag="--public").stop is None
    for bad in ("digits", "digits:train:5", "digits:train:a:b", "digits:train:9:3"):
        with pytest.raises(ConfigError, match="--private"):
            parse_part(bad, flag="--private")
    spec = InputSpec(1, 8, 8)
    sliced = Victim(
        "v", _net(), spec, meta={"dataset": "digits", "train_start": 5, "train_stop": 9}
    )
    assert (default_private(sliced).start, default_private(sliced).stop) == (5, 9)
    whole = default_private(Victim("v", _net(), spec, meta={"dataset": "digits"}))
    assert (whole.split, whole.start, whole.stop) == ("train", 0, None)
    with pytest.raises(ConfigError, match="give --private"):
        default_private(Victim("v", _net(), spec, meta={"format": "onnx"}))


# --- the command -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A victim trained on digits train[0:300], served by a python target; model files."""
    root = tmp_path_factory.mktemp("verify")
    train = load_dataset("digits", "train")
    victim = _net("mlp")
    fit(victim, train.images()[:300], train.y[:300], loss_fn=F.cross_entropy, steps=150,
        batch_size=64, seed=0, device="cpu")  # fmt: skip
    victim_file = save_model(victim, root / "victim.safetensors", arch="mlp", in_channels=1,
                             num_classes=10, image_size=8)  # fmt: skip
    target = root / "owner_model.py"
    target.write_text(
        "from stealkit.models.files import load_model\n\n\n"
        f"def make():\n    return load_model({str(victim_file)!r})\n"
    )
    big = build_model("cnn2-small", in_channels=1, num_classes=10, image_size=28)
    wide = save_model(big, root / "wide.safetensors", arch="cnn2-small", in_channels=1,
                      num_classes=10, image_size=28)  # fmt: skip
    params = json.dumps(
        {"target": f"{target}:make", "spec": {"channels": 1, "height": 8, "width": 8}}
    )
    return {"params": params, "victim": str(victim_file), "wide": str(wide), "root": str(root)}


def _verify(files: dict[str, str], *extra: str) -> list[str]:
    return ["verify", "--victim", "python", "--victim-params", files["params"], *extra]


def test_verify_prints_a_json_report_with_its_queries(files, capsys) -> None:
    argv = _verify(files, "--suspect", files["victim"], "--private", "digits:train:0:300",
                   "--samples", "12", "--json")  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 12 and report["alpha"] == 0.01
    assert 0.0 <= report["p_value"] <= 1.0
    assert report["copy"] == (report["p_value"] < 0.01)
    assert report["verdict"].startswith("suspect is a copy" if report["copy"] else "no evidence")
    # the default walk: f(x) for each of the 24 points, then one step where f(x) was right
    assert 24 < report["suspect_queries"] <= 48
    assert report["victim_queries"] >= 2 * (300 - 12)  # g's training points, both sets
    assert report["private"] == "digits:train:0:300" and report["public"] == "digits:test"
    assert "reference='true'" in report["method"]
    assert main([*argv[:-1]]) == 0  # the text form says the same
    text = capsys.readouterr().out
    assert report["verdict"] in text and f"{report['suspect_queries']} to the suspect" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--suspect", "VICTIM"), "give --private DATASET:SPLIT"),
        (("--suspect", "MISSING", "--private", "digits:train:0:300"), "does not exist"),
        (("--suspect", "WIDE", "--private", "digits:train:0:300"), "fails on a (1, 1, 8, 8)"),
        (("--suspect", "VICTIM", "--arch", "lenet5", "--private", "digits:train"), "arch=lenet5"),
        (("--suspect", "VICTIM", "--private", "no-such-set:train"), "unknown data set"),
        (("--suspect", "VICTIM", "--private", "digits:valid"), "splits"),
    ],
    ids=["no-private", "missing-file", "shape", "wrong-arch", "unknown-data", "bad-split"],
)
def test_bad_input_is_one_clean_line(files, capsys, extra: tuple[str, ...], message: str) -> None:
    names = {
        "VICTIM": files["victim"],
        "WIDE": files["wide"],
        "MISSING": files["root"] + "/x.safetensors",
    }
    assert main(_verify(files, *(names.get(a, a) for a in extra))) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
