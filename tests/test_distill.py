"""The distill technique: the loss, feature matching, a pruned student's zeros held, teachers from a recipe,
and its bad-input errors."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from tinyml.cli import main
from tinyml.errors import DataError, RecipeError
from tinyml.technique import Context
from tinyml_plugins.distill import Distill, distillation_loss
from tinyml_plugins.prune import Prune

CHEAP = {"epochs": 2, "teacher_epochs": 1}
TEACHER_PY = """from torch import nn


def make_teacher(classes=4):
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, classes))


def make_three():
    return make_teacher(3)
"""


def student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 4)
    ).eval()


def small_data(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
    return x, (x[:, 0, :3].sum(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 0, 3:].sum(axis=(1, 2)) > 0)


@pytest.fixture
def teacher_files(tmp_path: Path) -> tuple[Path, Path]:
    """teacher.py (4 or 3 classes) and teacher.pt, the 4-class teacher's weights."""
    (tmp_path / "teacher.py").write_text(TEACHER_PY)
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    return tmp_path / "teacher.py", tmp_path / "teacher.pt"


def distill(model: nn.Module, **options) -> nn.Module:
    return Distill({**CHEAP, **options}).apply(model, Context(train_data=small_data()))


def test_loss_is_hintons_mix_of_soft_and_hard_targets() -> None:
    rng = np.random.default_rng(0)
    s, t = (torch.from_numpy(rng.normal(size=(5, 4)).astype(np.float32)) for _ in range(2))
    y = torch.tensor([0, 1, 2, 3, 1])
    temperature, alpha = 3.0, 0.7
    p_t = np.exp(t.numpy() / temperature) / np.exp(t.numpy() / temperature).sum(1, keepdims=True)
    p_s = np.exp(s.numpy() / temperature) / np.exp(s.numpy() / temperature).sum(1, keepdims=True)
    kl = float((p_t * np.log(p_t / p_s)).sum(1).mean())
    hard = float(F.cross_entropy(s, y))
    soft_targets = F.softmax(t / temperature, dim=1)
    got = float(distillation_loss(s, soft_targets, y, temperature, alpha))
    assert got == pytest.approx(alpha * temperature**2 * kl + (1 - alpha) * hard, rel=1e-5)
    assert float(distillation_loss(s, soft_targets, y, temperature, 0.0)) == pytest.approx(hard, rel=1e-6)
    # A student that already gives the teacher's outputs has nothing left to learn from it.
    assert float(distillation_loss(t, soft_targets, y, temperature, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_student_moves_towards_the_teacher(teacher_files: tuple[Path, Path]) -> None:
    file, weights = teacher_files
    x, _ = small_data()
    teacher, untrained = Distill(teacher=f"{file}:make_teacher", teacher_weights=str(weights)).teacher(student())
    assert untrained is None
    before = student()
    after = distill(student(), teacher=f"{file}:make_teacher", teacher_weights=str(weights), alpha=1.0, epochs=8)

    def gap(model: nn.Module) -> float:
        with torch.no_grad():
            xt = torch.from_numpy(x)
            return float(F.kl_div(F.log_softmax(model(xt), 1), F.softmax(teacher(xt), 1), reduction="batchmean"))

    assert gap(after) < 0.5 * gap(before)


def test_pruned_student_keeps_its_zeros(teacher_files: tuple[Path, Path]) -> None:
    file, weights = teacher_files
    pruned = Prune(sparsity=0.6, scope="layer", steps=1, epochs_per_step=1).apply(
        student(), Context(train_data=small_data())
    )
    zero = {n: p.detach() == 0 for n, p in pruned.named_parameters() if n.endswith("weight")}
    assert all(z.float().mean() > 0.3 for z in zero.values())
    out = distill(pruned, teacher=f"{file}:make_teacher", teacher_weights=str(weights), epochs=3)
    for name, param in out.named_parameters():
        if name in zero:
            assert bool((param.detach()[zero[name]] == 0).all()), name
            assert not torch.equal(param.detach(), dict(pruned.named_parameters())[name].detach()), name


def test_feature_matching_trains_adapters_and_leaves_no_hooks(teacher_files: tuple[Path, Path]) -> None:
    file, weights = teacher_files
    options = {"teacher": f"{file}:make_teacher", "teacher_weights": str(weights), "epochs": 3}
    plain = distill(student(), **options)
    matched = distill(student(), **options, features={"0": "0", "4": "3"}, feature_weight=5.0)
    assert not torch.equal(plain[0].weight, matched[0].weight)  # the feature loss changed the training
    assert all(not m._forward_hooks for m in matched.modules())
    with pytest.raises(RecipeError, match="student's '3' gives \\[8\\] .* teacher's '0' \\[8, 6, 6\\]"):
        distill(student(), **options, features={"3": "0"})


def test_teacher_without_weights_is_trained_first(teacher_files: tuple[Path, Path]) -> None:
    file, _ = teacher_files
    seen: list[tuple[str, int]] = []
    done: list[int] = []

    @contextmanager
    def progress(description: str, total: int):
        seen.append((description, total))
        yield done.append

    context = Context(train_data=small_data(70), progress=progress)  # two batches of 64 per epoch
    Distill(teacher=f"{file}:make_teacher", teacher_epochs=3, epochs=2).apply(student(), context)
    Distill(epochs=1, teacher_epochs=1).apply(student(), context)  # no teacher: a copy of the model
    assert [total for _, total in seen] == [3 * 2, 2 * 2, 1 * 2, 1 * 2] and sum(done) == 14
    assert "teacher.py:make_teacher" in seen[0][0] and "copy of the model" in seen[2][0]
    assert "T = 4" in seen[1][0]
    with pytest.raises(RecipeError, match="teacher_epochs is 0, but the teacher has no weights"):
        distill(student(), teacher_epochs=0)


def test_teacher_scoring_other_classes_is_named(teacher_files: tuple[Path, Path]) -> None:
    file, _ = teacher_files
    with pytest.raises(RecipeError) as err:
        distill(student(), teacher=f"{file}:make_three")
    message = str(err.value)
    assert "teacher's output is shaped [3] per sample (3 classes) but the student's is [4] (4 classes)" in message
    assert "\n" not in message
    with pytest.raises(RecipeError, match="the teacher fails on the training inputs \\(\\[1, 5, 5\\] per sample\\)"):
        Distill(teacher=f"{file}:make_teacher").apply(
            nn.Sequential(nn.Flatten(), nn.Linear(25, 4)),
            Context(train_data=(np.zeros((4, 1, 5, 5), np.float32), np.zeros(4, np.int64))),
        )


def test_missing_teacher_file_function_or_weights_is_named(tmp_path: Path, teacher_files: tuple[Path, Path]) -> None:
    file, weights = teacher_files
    with pytest.raises(RecipeError, match="option teacher: the file .*nowhere.py does not exist"):
        distill(student(), teacher=f"{tmp_path / 'nowhere.py'}:make")
    with pytest.raises(RecipeError, match="option teacher: .*teacher.py has no function 'make_student'"):
        distill(student(), teacher=f"{file}:make_student")
    with pytest.raises(RecipeError, match="option teacher_weights: the file .*missing.pt does not exist"):
        distill(student(), teacher=f"{file}:make_teacher", teacher_weights=str(tmp_path / "missing.pt"))
    with pytest.raises(RecipeError, match="option teacher_weights: .*teacher.pt does not fit the model"):
        distill(student(), teacher=f"{file}:make_three", teacher_weights=str(weights))
    with pytest.raises(RecipeError, match="`teacher` must be FILE.py:FUNCTION"):
        Distill(teacher="teacher.py")


def test_feature_layer_naming_no_module_lists_the_paths(teacher_files: tuple[Path, Path]) -> None:
    file, weights = teacher_files
    options = {"teacher": f"{file}:make_teacher", "teacher_weights": str(weights)}
    with pytest.raises(RecipeError, match="features: 'conv9' names no module of the student.* are: 0, 1, 2, 3"):
        distill(student(), **options, features={"conv9": "0"})
    with pytest.raises(RecipeError, match="features: '7' names no module of the teacher"):
        distill(student(), **options, features={"0": "7"})


def test_no_training_data_is_named() -> None:
    with pytest.raises(DataError, match="'distill' fine-tunes the model and needs labelled training data"):
        Distill().apply(student(), Context())


def test_recipe_prunes_distills_and_compiles_with_qat(
    tmp_path: Path, teacher_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Teacher paths relative to the recipe; prune, then distill, then int8 with quantization-aware fine-tuning."""
    (tmp_path / "student.py").write_text(
        "from torch import nn\n\n\ndef make():\n    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), "
        "nn.Flatten(), nn.Linear(4 * 6 * 6, 4))\n"
    )
    x, y = small_data()
    np.savez(tmp_path / "calib.npz", x=x, y=y)  # labelled calibration data is the training data
    (tmp_path / "tinyml.toml").write_text(
        '[model]\nfactory = "student.py:make"\n[data]\ncalibration = "calib.npz"\n'
        '[[techniques]]\nname = "prune"\noptions = { sparsity = 0.5, steps = 1, epochs_per_step = 1 }\n'
        '[[techniques]]\nname = "distill"\n'
        'options = { teacher = "teacher.py:make_teacher", teacher_weights = "teacher.pt", epochs = 2 }\n'
        '[[techniques]]\nname = "quantize-int8"\noptions = { qat_epochs = 1 }\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the teacher's paths are the recipe's folder's, not the current one's
    result = CliRunner().invoke(main, ["compile", "--recipe", str(tmp_path / "tinyml.toml"), "--out", "out"])
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((elsewhere / "out" / "manifest.json").read_text())
    assert [t["name"] for t in manifest["techniques"]] == ["prune", "distill", "quantize-int8"]
    options = manifest["techniques"][1]["options"]
    assert options["teacher"] == f"{tmp_path / 'teacher.py'}:make_teacher"
    assert options["teacher_weights"] == str(tmp_path / "teacher.pt")


def test_recipe_error_for_a_mismatched_teacher_is_one_paragraph(tmp_path: Path, teacher_files: tuple[Path, Path]):
    (tmp_path / "flat.py").write_text(
        "from torch import nn\n\n\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))\n"
    )
    (tmp_path / "tinyml.toml").write_text('[[techniques]]\nname = "distill"\noptions = { teacher = "flat.py:make" }\n')
    result = CliRunner().invoke(main, ["compile", "--recipe", str(tmp_path / "tinyml.toml")])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Technique 'distill': the teacher's output is shaped [3]")
    assert "the student's is [10] (10 classes)" in result.stderr and result.stderr.count("\n") == 1
