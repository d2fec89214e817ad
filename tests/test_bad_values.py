"""Hostile and mistaken input: every bad value is one short ZooError, raised before any work.

Alias bombs, oversized and non-regular files, files that are not recipes (whose content must
not be echoed), run names that escape log.dir, out-of-range numbers, and checkpoints that do
not fit the model or are malformed.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from zoo import checkpoint
from zoo.errors import ZooError
from zoo.recipe import MAX_BYTES, load_recipe
from zoo.registry import Plugin, check_params, parse_spec
from zoo.runs import new_run_dir
from zoo.schema import RANGES, Recipe, from_dict

SECRET = "SECRETHASH42"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_line(error: pytest.ExceptionInfo, *fragments: str) -> str:
    msg = str(error.value)
    assert "\n" not in msg and len(msg) < 300, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def bomb(levels: int = 9) -> str:
    """'Billion laughs': ~430 bytes of YAML that stand for 10**levels items."""
    lines = ["l0: &l0 [x,x,x,x,x,x,x,x,x,x]"]
    lines += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def shared(levels: int) -> list:
    """10**levels leaves in a few hundred list objects, as YAML aliases build them."""
    value: list = ["x"] * 10
    for _ in range(levels - 1):
        value = [value] * 10
    return value


# ---------------------------------------------------------------------------------------
# YAML: alias bombs, size, what is read, what is quoted


def test_alias_bomb_is_refused_while_loading(tmp_path):
    # Under data.augment (a list of anything) the bomb passes the schema: without the cap on
    # expansion it would load "fine" and blow up later (to_yaml, a plugin, an error message).
    path = write(tmp_path / "bomb.yaml", bomb() + "data: {augment: *l8}\n")
    assert path.stat().st_size < 500
    with pytest.raises(ZooError) as e:
        load_recipe(path)
    one_line(e, str(path), "aliases")


def test_recursive_alias_is_refused(tmp_path):
    path = write(tmp_path / "loop.yaml", "data: {augment: &a [*a]}\n")
    with pytest.raises(ZooError) as e:
        load_recipe(path)
    one_line(e, "refer to themselves")


@pytest.mark.parametrize("key", ["model.depth", "model", "train.betas", "plugins"])
def test_error_quoting_a_shared_structure_stays_short(key):
    # 10**6 leaves: the full repr would be megabytes; the message quotes a bounded look.
    section, _, name = key.partition(".")
    value = shared(6)
    data = {section: {name: value}} if name else {section: value}
    with pytest.raises(ZooError) as e:
        from_dict(data, source="r.yaml")
    one_line(e, "r.yaml", key)


def test_plugin_spec_and_param_errors_stay_short():
    with pytest.raises(ZooError) as e:
        parse_spec(shared(6), "model.attention")
    one_line(e, "model.attention")

    def attention(dim: int, heads: int, scale: float = 1.0) -> None:
        """A stand-in plugin."""

    plugin = Plugin("attention", "stub", attention, __file__, 0)
    with pytest.raises(ZooError) as e:
        check_params(plugin, {"scale": "s" * 10**6}, "model.attention.stub")
    one_line(e, "model.attention.stub.scale", "expected float")


def test_recipe_larger_than_the_cap_is_refused(tmp_path):
    path = write(tmp_path / "big.yaml", "name: big\n# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ZooError) as e:
        load_recipe(path)
    one_line(e, str(path), "larger than")


def test_binary_file_is_one_line(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(ZooError) as e:
        load_recipe(path)
    one_line(e, str(path), "not UTF-8")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("a: 2020-13-01\n", "month must be in 1..12"),  # ValueError from the date constructor
     ("a: " + "1" * 5000 + "\n", "cannot be read")],  # int() refuses more than 4300 digits
)
def test_values_yaml_cannot_build_are_one_line(tmp_path, text, fragment):
    path = write(tmp_path / "r.yaml", text)
    with pytest.raises(ZooError) as e:
        load_recipe(path)
    one_line(e, str(path), "malformed YAML", fragment)


@pytest.mark.parametrize("kind", ["dev_zero", "folder"])
def test_base_that_is_not_a_regular_file(tmp_path, kind):
    target = {"dev_zero": Path("/dev/zero"), "folder": tmp_path}[kind]
    if not target.exists():
        pytest.skip(f"{target} does not exist here")
    path = write(tmp_path / "r.yaml", f"base: {target}\n")
    with pytest.raises(ZooError) as e:
        load_recipe(path)
    one_line(e, "base:", "not a regular file")


@pytest.mark.parametrize(
    "secret_file",
    [f"root:$6${SECRET}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",  # /etc/shadow
     f"{SECRET}=1\n",  # a .env line: a YAML string, not a mapping
     f"key: !{SECRET} x\n"],  # a tag PyYAML would quote in its error
)
def test_a_base_that_is_not_a_recipe_is_not_quoted(tmp_path, secret_file):
    shadow = write(tmp_path / "shadow", secret_file)
    path = write(tmp_path / "r.yaml", f"base: {shadow}\n")
    with pytest.raises(ZooError) as e:
        load_recipe(path)
    msg = one_line(e, str(shadow))
    assert SECRET not in msg and "19000" not in msg


# ---------------------------------------------------------------------------------------
# Run names


@pytest.mark.parametrize("name", ["../../x", "/abs", "a/b", "..", ".", "", "a b", "x\n"])
def test_name_that_is_not_one_folder_is_refused(name):
    with pytest.raises(ZooError) as e:
        from_dict({"name": name}, source="r.yaml")
    one_line(e, "r.yaml: name:", "letters, digits")


def test_run_dir_never_lands_outside_log_dir(tmp_path):
    logs = tmp_path / "logs"
    recipe = Recipe(name="../../escaped")  # built in Python: from_dict never saw it
    recipe.log.dir = str(logs)
    with pytest.raises(ZooError, match="name:"):
        new_run_dir(recipe)
    assert not any(p.name == "escaped" for p in tmp_path.rglob("*"))


@pytest.mark.parametrize(("stem", "name"), [("my recipe (1)", "my_recipe__1_"), ("..", "run")])
def test_name_from_an_odd_file_name_is_made_safe(tmp_path, stem, name):
    assert load_recipe(write(tmp_path / f"{stem}.yaml", "{}\n")).name == name


# ---------------------------------------------------------------------------------------
# Ranges


BAD_NUMBERS = [
    ("model.heads", 0), ("model.patch_size", 0), ("model.depth", 0), ("model.dim", 0),
    ("model.img_size", 0), ("model.in_chans", 0), ("model.num_classes", -1),
    ("model.mlp_ratio", 0), ("model.mlp_ratio", float("nan")), ("model.mlp_dim", 0),
    ("model.dropout", 1.0), ("model.attn_dropout", -0.1), ("model.drop_path", 1.5),
    ("data.batch_size", 0), ("data.eval_batch_size", 0), ("data.num_workers", -1),
    ("train.lr", 0), ("train.lr", -1e-3), ("train.lr", float("nan")), ("train.lr", float("inf")),
    ("train.eval_every", 0), ("train.checkpoint_every", 0), ("train.grad_clip", -1.0),
    ("train.grad_clip", 0), ("train.ema", 1.0), ("train.ema", 0), ("train.label_smoothing", 1.0),
    ("train.epochs", 0), ("train.warmup_epochs", -1), ("train.min_lr", -1e-6),
    ("train.weight_decay", -0.01), ("train.momentum", 1.0), ("train.betas", [0.9, 1.0]),
    ("train.betas", [0.9]), ("train.max_steps", 0), ("train.seed", -1), ("log.viz_images", 0),
]


@pytest.mark.parametrize(("key", "value"), BAD_NUMBERS, ids=lambda v: str(v))
def test_out_of_range_number_is_one_line_naming_the_key(key, value):
    section, name = key.split(".")
    with pytest.raises(ZooError) as e:
        from_dict({section: {name: value}}, source="r.yaml")
    one_line(e, f"r.yaml: {key}: ", "must be")


def test_edge_values_that_are_fine_are_accepted():
    r = from_dict({
        "model": {"num_classes": 0, "dropout": 0.0, "mlp_dim": None},
        "train": {"grad_clip": None, "ema": None, "max_steps": None, "warmup_epochs": 0,
                  "min_lr": 0, "label_smoothing": 0, "seed": 0, "betas": [0, 0.5]},
    })
    assert r.train.grad_clip is None and r.model.num_classes == 0


def is_numeric(hint: object) -> bool:
    return hint in (int, float) or any(map(is_numeric, typing.get_args(hint)))


def test_every_number_in_the_schema_has_a_range():
    """A numeric key added later without a range fails here."""
    checked = {key for key, _, _ in RANGES} | {"data.repeats"}  # repeats: its own check
    numeric = {
        f"{section}.{key}"
        for section, cls in typing.get_type_hints(Recipe).items() if dataclasses.is_dataclass(cls)
        for key, hint in typing.get_type_hints(cls).items() if is_numeric(hint)
    }
    assert {"train.betas", "model.mlp_dim", "train.ema"} <= numeric
    assert numeric <= checked, numeric - checked


# ---------------------------------------------------------------------------------------
# Checkpoints


def test_weights_of_another_shape_name_the_tensor(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(3, 8), "bias": torch.zeros(3)}, path)
    with pytest.raises(ZooError) as e:
        checkpoint.load_model(nn.Linear(4, 3), path, "run/recipe.yaml")
    one_line(e, str(path), "weight", "[3, 8]", "[3, 4]", "run/recipe.yaml")


def test_weights_missing_or_extra_tensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(3, 4)}, path)
    with pytest.raises(ZooError) as e:
        checkpoint.load_model(nn.Linear(4, 3), path, "r.yaml")
    one_line(e, "no tensor bias")
    save_file({"weight": torch.zeros(3, 4), "bias": torch.zeros(3), "extra": torch.zeros(1)}, path)
    with pytest.raises(ZooError) as e:
        checkpoint.load_model(nn.Linear(4, 3), path, "r.yaml")
    one_line(e, "1 tensors", "extra")
    save_file({"weight": torch.ones(3, 4), "bias": torch.ones(3)}, path)
    model = nn.Linear(4, 3)
    checkpoint.load_model(model, path, "r.yaml")
    assert torch.equal(model.weight, torch.ones(3, 4))


def good_state() -> dict:
    opt = torch.optim.AdamW(nn.Linear(2, 2).parameters())
    return {"format": checkpoint.FORMAT, "step": 3, "best_acc": 0.5,
            "optimizer": opt.state_dict(), "scaler": {}, "rng_cpu": torch.get_rng_state(),
            "rng_cuda": [], "world_size": 1, "closed_step": 3, "epoch_stats": [0.0] * 5,
            "epoch_seconds": 0.0, "train_seconds": 1.0, "last_metrics": {}}


@pytest.mark.parametrize(
    ("state", "fragment"),
    [([1, 2, 3], "not a mapping"),
     ({k: v for k, v in good_state().items() if k != "step"}, "(step:"),
     ({**good_state(), "step": "three"}, "(step:"),
     ({**good_state(), "best_acc": None}, "(best_acc:"),
     ({**good_state(), "rng_cpu": torch.zeros(4)}, "(rng_cpu:"),
     ({**good_state(), "optimizer": {}}, "(optimizer:")],
)
def test_malformed_state_is_one_line(tmp_path, state, fragment):
    path = tmp_path / "state.pt"
    torch.save(state, path)
    with pytest.raises(ZooError) as e:
        checkpoint.load_state(path, checkpoint.TRAINING_STATE)
    one_line(e, str(path), "malformed training state", fragment)


def test_well_formed_state_loads(tmp_path):
    torch.save(good_state(), tmp_path / "state.pt")
    assert checkpoint.load_state(tmp_path / "state.pt", checkpoint.TRAINING_STATE)["step"] == 3
    torch.save({"step": 1}, tmp_path / "state.pt")  # without a schema, any mapping
    assert checkpoint.load_state(tmp_path / "state.pt") == {"step": 1}


# ---------------------------------------------------------------------------------------
# FIFOs block a reader forever: run them in a subprocess with a timeout, so that a missing
# check fails the test (TimeoutExpired) instead of hanging the suite.


def zoo_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_one_line_exit_2(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_cli_fifo_as_base_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    path = write(tmp_path / "r.yaml", "base: fifo.yaml\n")
    assert_one_line_exit_2(zoo_cli("show", str(path)), "base:", "not a regular file")


def test_cli_patch_size_zero_is_one_line(tmp_path):
    # Was a ZeroDivisionError traceback from `img_size % patch_size`.
    path = write(tmp_path / "r.yaml", "model: {patch_size: 0}\n")
    assert_one_line_exit_2(zoo_cli("show", str(path)), str(path), "model.patch_size: 0 must be")


def test_checkpoint_fifos_are_refused(tmp_path):
    for name in ("model.safetensors", "state.pt"):
        os.mkfifo(tmp_path / name)
    code = (
        "import sys\nfrom pathlib import Path\nfrom zoo import checkpoint\n"
        "from zoo.errors import ZooError\n"
        "for load, name in ((checkpoint.load_weights, 'model.safetensors'),"
        " (checkpoint.load_state, 'state.pt')):\n"
        "    try:\n        load(Path(sys.argv[1]) / name)\n"
        "    except ZooError as e:\n        print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == 2, proc.stderr
    assert all("not a regular file" in line for line in lines), lines
