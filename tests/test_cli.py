import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sae.cli import main
from sae.render import gradcheck


def test_every_command_has_help(capsys):
    for argv in (
        ["--help"],
        ["render", "--help"],
        ["render", "demo", "--help"],
        ["render", "scene", "--help"],
        ["render", "gradcheck", "--help"],
        ["bench", "--help"],
        ["bench", "render", "--help"],
        ["bench", "detect", "--help"],
        ["bench", "attack", "--help"],
        ["data", "--help"],
        ["train", "--help"],
        ["eval", "--help"],
        ["metrics", "--help"],
        ["attack", "--help"],
        ["fid", "--help"],
    ):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 0, argv
        assert "usage: sae" in capsys.readouterr().out


def test_render_demo_writes_a_figure(tmp_path):
    out = tmp_path / "demo.png"
    assert main(["render", "demo", "--out", str(out), "--size", "310x94"]) == 0
    img = Image.open(out)
    assert img.size[0] > 1000 and img.size[1] > 500


def test_render_scene_round_trips_through_an_ir_file(tmp_path):
    ir, png, png2 = tmp_path / "s.npz", tmp_path / "a.png", tmp_path / "b.png"
    assert main(["render", "scene", "--size", "155x47", "--out", str(png), "--save-ir", str(ir)]) == 0
    assert main(["render", "scene", "--scene", str(ir), "--out", str(png2)]) == 0
    assert (np.asarray(Image.open(png)) == np.asarray(Image.open(png2))).all()


def test_render_gradcheck_prints_a_table_and_writes_every_case(tmp_path, capsys):
    out = tmp_path / "gc.json"
    argv = ["render", "gradcheck", "--parameters", "translate", "--cases", "2", "--size", "310x94", "--quiet"]
    fig = tmp_path / "gc.png"
    assert main(argv + ["--decompose", "--samples", "8", "--json", str(out), "--figure", str(fig)]) == 0
    text = capsys.readouterr().out
    assert "| translate | 2 |" in text and "misses from jumps" in text
    (row,) = json.loads(out.read_text())
    assert row["cases"] == 2 and len(row["results"]) == 2
    assert row["agree"] + row["misses_from_jumps"] + row["misses_from_variation"] == 2
    case = row["results"][0]
    assert {"auto", "fd", "fd_continuous"} <= set(case) and len(case["losses"]) == len(case["ts"]) == 9
    assert Image.open(fig).size[0] > 300
    assert main(argv + ["--figure", str(fig)]) == 2  # a figure needs the decomposition
    assert main(argv + ["--reference", "2", "--json", str(out)]) == 0
    assert "reference agrees with itself" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())
    cases = row["results"]
    assert row["reference_agrees"] == sum(gradcheck.agrees(c["reference_auto"], c["reference_fd"]) for c in cases)
    assert row["agree_with_reference_fd"] == sum(gradcheck.agrees(c["auto"], c["reference_fd"]) for c in cases)
    # the reference is the supersampled case's own check, not the case's
    (first,) = gradcheck.random_cases("translate", 1, h=94, w=310)
    big_auto, big_fd = gradcheck.check(gradcheck.supersampled(first, 2))
    assert cases[0]["reference_auto"] == big_auto and cases[0]["reference_fd"] == big_fd
    assert cases[0]["reference_auto"] != cases[0]["auto"]


def test_render_gradcheck_rejects_bad_counts(capsys):
    for argv in (["--samples", "12"], ["--cases", "0"], ["--reference", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["render", "gradcheck", *argv])
        assert exc.value.code == 2
        assert argv[0] in capsys.readouterr().err


def test_missing_scene_file_is_a_clear_error(tmp_path, capsys):
    assert main(["render", "scene", "--scene", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err


def test_bench_render_prints_a_table():
    proc = subprocess.run(
        [sys.executable, "-m", "sae", "bench", "render", "--sizes", "124x38", "--batches", "1", "--repeats", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| 124×38 | 1 |" in proc.stdout
    assert "fwd+bwd img/s" in proc.stdout


def test_bench_detect_prints_a_table(capsys):
    assert (
        main(["bench", "detect", "--detectors", "squeezedet", "--sizes", "160x48", "--batches", "1", "--repeats", "1"])
        == 0
    )
    out = capsys.readouterr().out
    assert "| squeezedet | 160×48 | 1 |" in out and "inference img/s" in out


def test_bench_detect_times_a_checkpoint_at_its_own_size(capsys, tmp_path):
    """``--checkpoint`` times the trained detector it holds, at the size it was trained for (not
    ``--sizes``), named by its folder; a missing checkpoint is a clear error naming it."""
    from sae.detectors.train import TrainConfig, build_detector, save_checkpoint

    cfg = TrainConfig(size=(48, 160), model={"width": 0.25})
    save_checkpoint(tmp_path / "tuned" / "final.pt", build_detector("squeezedet", cfg.size, cfg.model), None, 1, cfg)
    argv = ["bench", "detect", "--sizes", "320x96", "--batches", "1", "--repeats", "1"]
    assert main(argv + ["--checkpoint", str(tmp_path / "tuned" / "final.pt")]) == 0
    out = capsys.readouterr().out
    assert "| squeezedet (tuned) | 160×48 | 1 |" in out and "320×96" not in out
    assert "subnormal floats: flushed to zero" in out
    assert main(argv + ["--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert f"checkpoint not found: {tmp_path / 'none.pt'}" in capsys.readouterr().err


def test_bench_attack_prints_a_table(capsys):
    argv = ["bench", "attack", "--sizes", "160x48", "--batches", "1", "--repeats", "1", "--steps", "2"]
    assert main(argv + ["--model", '{"width": 0.25, "batch_norm": true}', "--paper-victim"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[1] == "160×48":
            rows[cells[0]] = cells
    # the run's victim, and the paper's SqueezeDet (full width) beside it
    assert set(rows) == {"width 0.25, batch norm", "the original (the paper's)"}, out
    for cells in rows.values():
        sae_s, render_s, detector_s, other_s = (float(c) for c in cells[3:7])
        assert sae_s > 0 and render_s > 0 and detector_s > 0
        assert abs(render_s + detector_s + other_s - sae_s) < 1e-2 * max(sae_s, 1e-3) + 2e-3
        assert float(cells[9]) > 0  # semantic / pixel iteration ratio
    # the full-width victim costs more per iteration on the same images
    assert float(rows["the original (the paper's)"][8]) > float(rows["width 0.25, batch norm"][8])


def test_doctor_lists_what_is_missing(tmp_path, capsys):
    import json

    import yaml

    cfg = {"results": str(tmp_path / "r"), "device": "cpu", "data": {"real_root": str(tmp_path / "nowhere")}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["doctor", "--config", str(path), "--out", str(tmp_path / "d.json")]) == 1
    out = capsys.readouterr().out
    assert "data.real_root" in out and "nowhere" in out
    found = json.loads((tmp_path / "d.json").read_text())
    assert found["info"]["device"] == "cpu" and len(found["problems"]) == 1
    cfg["data"] = {}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["doctor", "--config", str(path)]) == 0
    profile = tmp_path / "prof"
    profile.mkdir()
    (profile / "config.yaml").write_text(
        "executor: slurm\ndefault-resources:\n  slurm_partition: gpu\n  slurm_account: ''\n"
    )
    assert main(["doctor", "--config", str(path), "--profile", str(profile)]) == 1
    assert "slurm_account is empty" in capsys.readouterr().out


def test_cli_constants_match_the_modules_they_name():
    """The command line's light constants (no torch import) agree with the heavy modules."""
    from sae.constants import DETECTOR_NAMES
    from sae.detectors.train import DETECTORS

    assert tuple(DETECTORS) == DETECTOR_NAMES


def test_help_imports_no_torch():
    """`sae … --help` and the parser stay light: every job of the workflow starts a `sae` process."""
    import subprocess
    import sys

    code = "import sys; from sae.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_malformed_model_lists_are_clear_errors(tmp_path, capsys):
    """`sae table models` / `sae table victims` name the flag, the item and the expected form."""
    out = str(tmp_path / "t")
    for argv, item, form in [
        (["table", "models", "--models", "baseline", "--out", out], "'baseline'", "NAME=FOLDER"),
        (["table", "models", "--models", "=eval/x", "--out", out], "'=eval/x'", "NAME=FOLDER"),
        (
            ["table", "victims", "--models", "squeezedet=models", "--out", out],
            "'squeezedet=models'",
            "MODELS_DIR:EVAL_DIR",
        ),
        (["table", "victims", "--models", "yolov3=models:", "--out", out], "'yolov3=models:'", "MODELS_DIR:EVAL_DIR"),
    ]:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"--models {item}: expected" in err and form in err, err
    assert not (tmp_path / "t.md").exists()
