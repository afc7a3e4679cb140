"""Bad input fails early and clearly: malformed workflow configs, corrupt or missing data.

Configs: each malformed config is rejected by the schema and :func:`sae.config.check_config`
(what the ``Snakefile`` runs before any job) with a message naming the key; a few go through a
real ``snakemake -n``. Data: each corrupt file (image, text ground truth, IR, checkpoint,
attack records) raises an error naming the file (and line), through the public readers and the
``sae`` commands, and a failing ``sae attack`` or ``sae train`` rerun leaves what was already
written byte for byte intact.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from workflow_util import ROOT
from workflow_util import copy_workflow as _copy_workflow
from workflow_util import snakemake as _snakemake

from sae import doctor
from sae.cli import main as sae_main
from sae.config import ConfigError, check_config
from sae.data.export import ExportItem, export
from sae.data.kitti import KITTI, read_calib, read_label
from sae.data.street import street_scene
from sae.data.vkitti import VKITTI2, FormatError
from sae.detectors.train import TrainConfig, build_detector, load_checkpoint, save_checkpoint
from sae.scene.ir import Scene

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def _smoke() -> dict:
    return yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def _edit(cfg: dict, path: tuple, value) -> dict:
    """``cfg`` with ``path`` set to ``value`` (``DELETE`` removes the key)."""
    cfg = copy.deepcopy(cfg)
    node = cfg
    for part in path[:-1]:
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cfg


DELETE = object()
SQZ = ("detectors", "squeezedet")
YOLO = ("detectors", "yolov3")
_SCHEDULE = {"iterations": 4, "batch_size": 8, "optimizer": "adam", "lr": 0.002, "warmup": 5, "checkpoint_every": 2}

#: (what is changed, the new value, what the error must name). Each is a distinct mistake;
#: ``tests/test_workflow.py`` sends three of them through Snakemake itself.
MALFORMED = [
    (("seed",), -1, "seed"),
    (("device",), "tpu", "device"),
    (("data", "scale"), "huge", "scale"),
    (("data", "workers"), 0, "workers"),
    (("data", "size"), [621], "size"),
    (("figures", "demo_seed"), "three", "demo_seed"),
    (("colour",), 1, "colour"),
    (("attacks", "combos"), ["colour+rotate"], "combos"),
    (("attacks", "eps", "mesh"), -0.025, "mesh"),
    (("attacks", "steps"), "six", "steps"),
    (("attacks", "other_examples"), 0, "other_examples"),
    ((*SQZ, "pretrain", "lr"), 0, "lr"),
    ((*SQZ, "pretrain", "ema"), 1.0, "ema"),
    (("metrics", "difficulty"), "medium", "difficulty"),
    (("results",), "", "results"),
    (("results",), 5, "results"),
    (("seed",), 1.5, "seed"),
    (("seed",), True, "seed"),
    (("device",), "cuda:x", "device"),
    (("device",), "CPU", "device"),
    (("data", "size"), [0, 94], "size"),
    (("data", "size"), [310, 94, 3], "size"),
    (("data", "size"), "310x94", "size"),
    (("data", "size"), [100_000, 94], "size"),
    (("data", "derender_frames"), 0, "derender_frames"),
    (("data", "colour"), 1, "colour"),
    (("data", "scale"), DELETE, "scale"),
    (("figures", "demo_size"), [-5, 94], "demo_size"),
    (("train", "finetune_pretrain_weight"), -0.5, "finetune_pretrain_weight"),
    (("train", "finetune_pretrain_weight"), DELETE, "finetune_pretrain_weight"),
    (("detectors",), {}, "detectors"),
    (("detectors", "resnet"), {"model": {}, "pretrain": _SCHEDULE, "finetune": _SCHEDULE}, "resnet"),
    ((*SQZ, "pretrain", "iterations"), 0, "iterations"),
    ((*SQZ, "finetune", "iterations"), -3, "iterations"),
    ((*YOLO, "pretrain", "batch_size"), 0, "batch_size"),
    ((*SQZ, "pretrain", "optimizer"), "rmsprop", "optimizer"),
    ((*SQZ, "finetune", "warmup"), -1, "warmup"),
    ((*YOLO, "finetune", "checkpoint_every"), 0, "checkpoint_every"),
    ((*SQZ, "pretrain", "lr"), 1e6, "lr"),
    ((*SQZ, "model"), "wide", "model"),
    ((*SQZ, "finetune"), DELETE, "finetune"),
    (("attacks", "method"), "fgsm", "method"),
    (("attacks", "victim"), "resnet", "victim"),
    (("attacks", "eps", "translate"), 50, "translate"),
    (("attacks", "eps", "color"), 0, "color"),
    (("attacks", "eps", "weather"), DELETE, "weather"),
    (("attacks", "eps", "colour"), 0.05, "colour"),
    (("attacks", "steps"), 0, "steps"),
    (("attacks", "examples"), 0, "examples"),
    (("attacks", "batch_size"), -2, "batch_size"),
    (("attacks", "combos"), [], "combos"),
    (("attacks", "combos"), "everything", "combos"),
    (("attacks", "headline"), "translate+rotat", "headline"),
    (("attacks", "pixel", "eps"), 2.0, "eps"),
    (("attacks", "pixel", "steps"), 0, "steps"),
    (("timing", "sizes"), [], "sizes"),
    (("timing", "sizes"), [[155]], "sizes"),
    (("metrics", "difficulty"), 3, "difficulty"),
    (("cpu_kernels",), "fastest", "cpu_kernels"),
    # past the schema: sae.config.check_config
    ((*SQZ, "model", "widht"), 0.25, "detectors.squeezedet.model.widht"),
    ((*SQZ, "model", "width"), "wide", "detectors.squeezedet.model.width"),
    ((*SQZ, "model", "width"), -1.0, "detectors.squeezedet.model.width"),
    ((*SQZ, "model", "dropout"), 1.5, "detectors.squeezedet.model.dropout"),
    ((*SQZ, "model", "batch_norm"), "yes", "detectors.squeezedet.model.batch_norm"),
    ((*YOLO, "model", "image_size"), [94, 310], "detectors.yolov3.model.image_size"),
    ((*YOLO, "model", "depth"), 0, "detectors.yolov3.model.depth"),
    ((*SQZ, "model", "anchors"), "k-means", "detectors.squeezedet.model.anchors"),
    (("detectors",), {"yolov3": {"model": {}, "pretrain": _SCHEDULE, "finetune": _SCHEDULE}}, "attacks.victim"),
    (("attacks", "combos"), ["rotate+rotate"], "attacks.combos[0]"),
    (("attacks", "combos"), ["translate+rotate", "rotate+translate"], "attacks.combos[1]"),
]


def _rejection(cfg: dict) -> str:
    """What the Snakefile's checks say about ``cfg`` (fails the test if they accept it)."""
    try:
        validate(cfg, str(SCHEMA))
        check_config(cfg)
    except (WorkflowError, ConfigError) as exc:
        return str(exc)
    pytest.fail("the malformed config was accepted")


def test_the_unmodified_configs_pass_the_checks():
    for name in ("config", "smoke", "paper"):
        cfg = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
        validate(cfg, str(SCHEMA))
        check_config(cfg)
        for spec in cfg["detectors"].values():  # anchors: shapes, null or fitted by training
            for anchors in ([[10, 20]] * 9, None, "kmeans"):
                spec["model"]["anchors"] = anchors
                check_config(cfg)


@pytest.mark.parametrize("path, value, key", MALFORMED, ids=lambda v: ".".join(v) if isinstance(v, tuple) else None)
def test_malformed_config_is_rejected_naming_the_key(path, value, key):
    message = _rejection(_edit(_smoke(), path, value))
    if "." in key:  # check_config names the dotted key itself
        assert f"config key {key}:" in message, message
    else:  # the schema's error names the key in its instance path, or as required / unexpected
        assert f"['{key}']" in message or f"'{key}'" in message, message


@pytest.mark.parametrize(
    "path, value, key",
    [
        (("attacks", "eps", "translate"), 50, "translate"),
        (("attacks", "victim"), "yolov3", None),  # check_config, run by the Snakefile
    ],
)
def test_snakemake_dry_run_rejects_before_any_job(path, value, key, tmp_path):
    work = _copy_workflow(tmp_path / "wf")
    cfg = _edit(_smoke(), path, value)
    if key is None:  # the victim is not among the trained detectors
        del cfg["detectors"]["yolov3"]
        key = "attacks.victim"
    cfg["results"] = "results"
    # the default config file itself (a --configfile would be merged into it, keeping yolov3)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = _snakemake("-n", cwd=work)
    assert proc.returncode != 0
    assert key in proc.output, proc.output[-2000:]
    assert "Job stats" not in proc.output  # no DAG was built, so no job could start
    assert not (work / "results").exists()


def test_preflight_names_a_missing_gpu_and_an_unwritable_results_folder(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    problems = doctor.check({**_smoke(), "device": "cuda:1"})["problems"]
    assert any(p.startswith("device: ") and "no CUDA device" in p for p in problems), problems
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not _writable(locked):  # (root writes anywhere: then only the device is checked)
            problems = doctor.check({**_smoke(), "results": str(locked / "results")})["problems"]
            assert any(p.startswith("results: ") and str(locked) in p for p in problems), problems
    finally:
        locked.chmod(0o700)


def _writable(folder: Path) -> bool:
    """Whether this process can create a file in ``folder`` (root can, whatever the mode)."""
    try:
        (folder / ".probe").touch()
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


# ------------------------------------------------------------------------------ corrupt data

SIZE = (24, 64)  # (H, W) of the tiny data set and detectors
TINY = {"squeezedet": {"width": 0.125, "dropout": 0.0}, "yolov3": {"width": 0.125, "depth": 0.34}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Three 64×24 streets exported in both layouts (``data/vkitti2`` with IRs, ``data/kitti``)
    and an untrained tiny SqueezeDet and YOLOv3 checkpoint for them. Read-only: copy it."""
    root = tmp_path_factory.mktemp("tiny")
    items = [
        ExportItem("Scene01", "clone", i, street_scene(seed=i, height=SIZE[0], width=SIZE[1], n_cars=2))
        for i in range(3)
    ]
    assert export(items, root / "data") == 3
    for name, model in TINY.items():
        torch.manual_seed(0)
        net = build_detector(name, SIZE, model)
        save_checkpoint(root / f"{name}.pt", net, None, 0, TrainConfig(detector=name, size=SIZE, model=model))
    return root


@pytest.fixture
def work(tiny, tmp_path):
    """A writable copy of :func:`tiny`."""
    shutil.copytree(tiny, tmp_path / "w")
    return tmp_path / "w"


def _sae(capsys, *argv) -> tuple[int, str]:
    """Run the ``sae`` command line in-process; ``(exit status, stderr)``."""
    capsys.readouterr()
    rc = sae_main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _seq(work: Path) -> Path:
    return work / "data" / "vkitti2" / "Scene01" / "clone"


def _frame_file(work: Path, folder: str, name: str) -> Path:
    return _seq(work) / "frames" / folder / "Camera_0" / name


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_truncated_jpeg_is_named(work, capsys):
    jpg = _frame_file(work, "rgb", "rgb_00001.jpg")
    _truncate(jpg, 0.3)
    with pytest.raises(FormatError, match=f"{jpg}: unreadable or truncated image"):
        VKITTI2(work / "data" / "vkitti2")[1]
    rc, err = _sae(capsys, "data", "read", work / "data" / "vkitti2")
    assert rc == 2 and str(jpg) in err


def test_a_truncated_png_is_named(work, capsys):
    png = work / "data" / "kitti" / "training" / "image_2" / "000002.png"
    _truncate(png)
    with pytest.raises(FormatError, match=f"{png}: unreadable or truncated image"):
        KITTI(work / "data" / "kitti")[2]
    rc, err = _sae(capsys, "data", "read", work / "data" / "kitti")
    assert rc == 2 and str(png) in err


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda lines: [], ":1: expected header"),  # an empty file
        (lambda lines: lines[:2] + [" ".join(lines[2].split()[:-1])] + lines[3:], ":3: expected 11 fields, got 10"),
        (lambda lines: lines[:3] + ["0 0 x" + lines[3][5:]] + lines[4:], ":4: not a int: 'x'"),
    ],
    ids=["empty", "short row", "non-numeric track"],
)
def test_a_malformed_bbox_txt_is_named_with_its_line(work, capsys, edit, where):
    bbox = _seq(work) / "bbox.txt"
    lines = bbox.read_text().splitlines()
    assert len(lines) >= 4, lines  # a header and at least three boxes to break
    bbox.write_text("".join(line + "\n" for line in edit(lines)))
    with pytest.raises(FormatError, match=f"{bbox}{where}"):
        reader = VKITTI2(work / "data" / "vkitti2")
        reader.check()
        [reader[i] for i in range(len(reader))]
    rc, err = _sae(capsys, "data", "read", work / "data" / "vkitti2")
    assert rc == 2 and f"{bbox}{where}" in err


@pytest.mark.parametrize(
    "line, where",
    [
        ("Car 0.00 0 -1.57 10.00 5.00 30.00 20.00 1.50 1.80 4.40 1.00 1.65 20.00", "expected 15 fields"),
        ("Car 0.00 0 -1.57 10.00 5.00 30.00 20.00 1.50 1.80 4.40 1.00 1.65 far -1.50", "could not convert"),
        ("Truckk 0.00 0 -1.57 10.00 5.00 30.00 20.00 1.50 1.80 4.40 1.00 1.65 20.00 -1.50", "unknown type"),
    ],
    ids=["14 fields", "non-numeric", "unknown type"],
)
def test_a_malformed_kitti_label_is_named_with_its_line(work, capsys, line, where):
    label = work / "data" / "kitti" / "training" / "label_2" / "000001.txt"
    label.write_text(label.read_text() + line + "\n")
    number = len(label.read_text().splitlines())
    with pytest.raises(FormatError, match=f"{label}:{number}: {where}"):
        read_label(label)
    rc, err = _sae(capsys, "data", "read", work / "data" / "kitti")
    assert rc == 2 and f"{label}:{number}: {where}" in err


def test_a_non_numeric_calib_is_named_with_its_line(work):
    calib = work / "data" / "kitti" / "training" / "calib" / "000000.txt"
    lines = calib.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("P2:"))
    lines[row] = lines[row].replace(lines[row].split()[3], "nan?", 1)
    calib.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=f"{calib}:{row + 1}:"):
        read_calib(calib)


def test_mismatched_frame_counts_are_named(work, capsys):
    kitti = work / "data" / "kitti" / "training"
    (kitti / "image_2" / "000002.png").unlink()  # a label with no image
    with pytest.raises(FormatError, match=r"image_2: no image for label\(s\) \['000002'\] \(2 images, 3 labels"):
        KITTI(work / "data" / "kitti")
    (kitti / "label_2" / "000002.txt").unlink()
    (kitti / "label_2" / "000001.txt").unlink()  # an image with no label
    with pytest.raises(FormatError, match=r"label_2: no label for image\(s\) \['000001'\]"):
        KITTI(work / "data" / "kitti")
    jpg = _frame_file(work, "rgb", "rgb_00002.jpg")  # intrinsic.txt lists frame 2, its image is gone
    jpg.unlink()
    rc, err = _sae(capsys, "data", "read", work / "data" / "vkitti2")
    assert rc == 2 and "missing rgb file rgb_00002.jpg for Scene01/clone Camera_0" in err

    intrinsic = _seq(work) / "intrinsic.txt"
    intrinsic.write_text("".join(line + "\n" for line in intrinsic.read_text().splitlines()[:-1]))
    shutil.copy(_frame_file(work, "rgb", "rgb_00001.jpg"), jpg)  # boxes of frame 2, no intrinsics row
    rc, err = _sae(capsys, "data", "read", work / "data" / "vkitti2")
    assert rc == 2 and f"{_seq(work) / 'bbox.txt'}: frames [2] have boxes but no intrinsic.txt row" in err


@pytest.mark.parametrize("folder, name", [("depth", "depth_00001.png"), ("ir", "ir_00001.npz")])
def test_a_dense_map_missing_for_one_frame_is_named(work, capsys, folder, name):
    path = _frame_file(work, folder, name)
    assert path.is_file(), path
    path.unlink()  # the sequence has this modality for its other frames
    rc, err = _sae(capsys, "data", "read", work / "data" / "vkitti2")
    assert rc == 2 and f"Scene01/clone Camera_0 has 2 {folder} files for 3 frames; missing {name}" in err, err


def test_corrupt_or_foreign_ir_files_are_named(work):
    ir = _frame_file(work, "ir", "ir_00000.npz")
    scene = Scene.load(ir)
    np.savez(ir.with_name("foreign.npz"), x=np.zeros(3))
    with pytest.raises(ValueError, match="foreign.npz: not a sae scene file"):
        Scene.load(ir.with_name("foreign.npz"))
    bad = scene.replace(obj_dims=scene.obj_dims[..., :2])
    with pytest.raises(ValueError, match="obj_dims has shape"):
        bad.save(ir.with_name("bad_shape.npz"))
        Scene.load(ir.with_name("bad_shape.npz"))
    _truncate(ir)
    with pytest.raises(ValueError, match=f"{ir}: not a readable scene file"):
        Scene.load(ir)


def _attack(capsys, work: Path, *extra) -> tuple[int, str]:
    return _sae(
        capsys,
        "attack",
        "--checkpoint",
        work / "squeezedet.pt",
        "--data",
        work / "data" / "vkitti2",
        "--out",
        work / "sae",
        "--combo",
        "color+translate",
        "--steps",
        "1",
        "--batch-size",
        "1",
        *extra,
    )


def test_a_missing_ir_is_named_before_anything_is_written(work, capsys):
    ir = _frame_file(work, "ir", "ir_00001.npz")
    ir.unlink()
    rc, err = _attack(capsys, work)
    assert rc == 2 and f"{ir}: missing — attacks need the IR of every frame" in err
    assert not (work / "sae" / "attack.jsonl").exists()


def test_a_failing_attack_rerun_names_the_file_and_keeps_what_was_done(work, capsys):
    rc, err = _attack(capsys, work, "--limit", "1")
    assert rc == 0, err
    done = _snapshot(work / "sae")
    records = (work / "sae" / "attack.jsonl").read_text().splitlines()
    first = json.loads(records[0])["name"]  # Scene01/clone/Camera_0/NNNNN
    slug = first.replace("/", "_")
    assert len(records) == 1 and f"theta/{slug}.npz" in done, sorted(done)
    # a corrupt IR of a frame still to do
    todo = next(i for i in range(3) if not first.endswith(f"{i:05d}"))
    ir = _frame_file(work, "ir", f"ir_{todo:05d}.npz")
    original = ir.read_bytes()
    _truncate(ir)
    rc, err = _attack(capsys, work)
    assert rc == 2 and f"{ir}: not a readable scene file" in err, err
    assert _snapshot(work / "sae") == done
    ir.write_bytes(original)
    # a corrupt record: a half-written line, then a line that is not a record
    path = work / "sae" / "attack.jsonl"
    for line, why in ((records[0][: len(records[0]) // 2], "corrupt record"), ('["x"]', "not an attack record")):
        path.write_text(records[0] + "\n" + line + "\n")
        before = _snapshot(work / "sae")
        rc, err = _attack(capsys, work)
        assert rc == 2 and f"{path}:2: {why}" in err, err
        assert _snapshot(work / "sae") == before
    path.write_text(records[0] + "\n")
    # a truncated θ file of a finished example
    theta = work / "sae" / "theta" / f"{slug}.npz"
    _truncate(theta)
    rc, err = _attack(capsys, work, "--limit", "1")
    assert rc == 2 and f"{theta}: unreadable θ file" in err, err


class _Touch:
    """Pickles as a call that creates a file: what an unsafe ``torch.load`` would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _eval(capsys, checkpoint: Path, work: Path) -> tuple[int, str]:
    return _sae(capsys, "eval", "--checkpoint", checkpoint, "--data", work / "data" / "kitti")


def test_a_pickled_object_checkpoint_is_refused_unrun(work, capsys):
    marker = work / "pwned"
    evil = work / "evil.pt"
    state = torch.load(work / "squeezedet.pt", weights_only=True)
    torch.save({**state, "hook": _Touch(marker)}, evil)
    with pytest.raises(ValueError, match=f"{evil}: not a readable checkpoint"):
        load_checkpoint(evil)
    rc, err = _eval(capsys, evil, work)
    assert rc == 2 and f"{evil}: not a readable checkpoint" in err and "weights_only" in err.replace(" ", "_")
    assert not marker.exists()  # the pickled call never ran


def test_checkpoints_that_are_not_this_detector_are_named(work, capsys):
    yolo = torch.load(work / "yolov3.pt", weights_only=True)
    sqz = torch.load(work / "squeezedet.pt", weights_only=True)
    cases = {
        "swapped.pt": ({**yolo, "config": sqz["config"]}, "the weights do not fit the squeezedet"),
        "bare.pt": (sqz["model"], "not a sae checkpoint"),
        "garbage.pt": (None, "not a readable checkpoint"),
    }
    for name, (state, why) in cases.items():
        path = work / name
        if state is None:
            path.write_bytes(b"PK\x03\x04 not a zip at all" * 10)
        else:
            torch.save(state, path)
        with pytest.raises(ValueError, match=f"{path}: {why}"):
            load_checkpoint(path)
        rc, err = _eval(capsys, path, work)
        assert rc == 2 and f"{path}: {why}" in err, err
    # fine-tuning a SqueezeDet from a YOLOv3 checkpoint
    rc, err = _sae(
        capsys,
        "train",
        "--detector",
        "squeezedet",
        "--data",
        work / "data" / "kitti",
        "--out",
        work / "tuned",
        "--size",
        f"{SIZE[1]}x{SIZE[0]}",
        "--iterations",
        "1",
        "--batch-size",
        "1",
        "--model",
        '{"width": 0.125, "dropout": 0.0}',
        "--init",
        work / "yolov3.pt",
    )
    assert rc == 2 and f"{work / 'yolov3.pt'}: the initial checkpoint's YOLOv3 does not fit" in err, err
    assert not (work / "tuned" / "final.pt").exists()


def _train_into(capsys, work, out):
    return _sae(
        capsys,
        "train",
        "--data",
        work / "data" / "kitti",
        "--out",
        out,
        "--size",
        f"{SIZE[1]}x{SIZE[0]}",
        "--iterations",
        "4",
        "--batch-size",
        "1",
        "--model",
        '{"width": 0.125, "dropout": 0.0}',
    )


def test_a_failing_train_resume_names_the_checkpoint_and_keeps_it(work, capsys):
    out = work / "run"
    out.mkdir()
    last = out / "last.pt"
    shutil.copy(work / "squeezedet.pt", last)
    _truncate(last)
    (out / "train_log.jsonl").write_text('{"step": 1, "total": 3.0}\n{"step": 2, "total": 2.5}\n')
    before = _snapshot(out)
    rc, err = _train_into(capsys, work, out)
    assert rc == 2 and f"{last}: not a readable checkpoint" in err, err
    assert _snapshot(out) == before


def test_a_checkpoint_of_another_run_is_set_aside_not_resumed_or_lost(work, capsys):
    """A last.pt left by a run of another configuration (here another architecture) is not
    resumed: it is kept as last.pt.stale, with a warning naming it, and training starts afresh."""
    out = work / "run"
    out.mkdir()
    last = out / "last.pt"
    shutil.copy(work / "yolov3.pt", last)
    kept = last.read_bytes()
    rc, err = _train_into(capsys, work, out)
    assert rc == 0 and f"warning: {last} is from another configuration" in err, err
    assert (out / "last.pt.stale").read_bytes() == kept and (out / "final.pt").is_file()
