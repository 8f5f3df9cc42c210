"""``data.layout=folders``: a folder of class folders, single-label; no CSV at all.

    <root>/train/<label>/**/<clip>     a clip's label is its top-level folder's name (subfolders keep it)
           test/**/<clip>              optional: the test clips; those below test/<label>/ (a train label's
                                       name) are labelled and scored, the others only tagged
           features/                   the feature cache (data.features_dir), never scanned

- a clip is a file whose extension is one of ``data.extensions`` (any case); other files are ignored, and so
  are hidden files and folders (a name starting with ``.``) and ``data.features_dir`` wherever it is;
- ``fname`` is the path relative to ``train/`` (or ``test/``) in POSIX form, e.g. ``Bark/park/001.wav``;
- the vocabulary is the sorted label folder names; a name holding whitespace or a comma is an error (the
  single-label submission separates labels by spaces), as is an audio file directly in ``train/`` (it has
  no label) and a label folder without any clip (a label no clip teaches);
- without ``test/`` the data set has no test split (``test_fnames()`` is empty; blend.py then refuses, while
  predict.py tags any folder with ``input=``).

The data set's identity (:meth:`digest`) is the sha256 of its sorted ``fname<TAB>label`` lines.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path, PurePosixPath

import pandas as pd

from fstag.data.layouts.base import DatasetError, Layout
from fstag.data.layouts.registry import register_layout

log = logging.getLogger(__name__)

TRAIN_DIR, TEST_DIR = "train", "test"
DEFAULT_EXTENSIONS = ("wav", "flac", "ogg", "mp3", "aiff", "aif")


def _hidden(name: str) -> bool:
    return name.startswith(".")


@register_layout
class FoldersLayout(Layout):
    """A folder of class folders (see the module docstring)."""

    name = "folders"
    task = "single_label"
    tree = "train/<label>/<clips> (optional: test/[<label>/]<clips>)"

    # settings ------------------------------------------------------------------------------------------
    @property
    def extensions(self) -> set[str]:
        exts = self.options.get("extensions") or DEFAULT_EXTENSIONS
        return {"." + str(e).lower().lstrip(".") for e in exts}

    def _skipped_dirs(self) -> set[str]:
        """Real paths of the folders never scanned: the feature cache (``data.features_dir`` and the
        default ``<root>/features``)."""
        dirs = [self.root / "features", *([Path(str(self.options["features_dir"]))]
                                           if self.options.get("features_dir") else [])]
        return {os.path.realpath(d) for d in dirs}

    def _is_audio(self, name: str) -> bool:
        return os.path.splitext(name)[1].lower() in self.extensions

    def _scan(self, folder: Path) -> list[str]:
        """The clips below ``folder``, as sorted POSIX paths relative to it (hidden names, the feature cache
        and symlink loops skipped)."""
        skip, seen, out = self._skipped_dirs(), set(), []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # a symlink back up the tree
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames
                                 if not _hidden(d) and os.path.realpath(os.path.join(dirpath, d)) not in skip)
            rel = PurePosixPath(Path(dirpath).relative_to(folder).as_posix())
            out += [(rel / f).as_posix() for f in filenames if not _hidden(f) and self._is_audio(f)
                    and os.path.isfile(os.path.join(dirpath, f))]
        return sorted(out)

    @property
    def train_dir(self) -> Path:
        return self.root / TRAIN_DIR

    @property
    def test_dir(self) -> Path:
        return self.root / TEST_DIR

    # the questions -------------------------------------------------------------------------------------
    def train_table(self) -> pd.DataFrame:
        if not self.train_dir.is_dir():
            raise DatasetError(f"{self.train_dir}: no such folder; {self.describe()}")
        skip = self._skipped_dirs()
        rows: list[tuple[str, str]] = []
        for entry in sorted(self.train_dir.iterdir(), key=lambda p: p.name):
            if _hidden(entry.name) or os.path.realpath(entry) in skip:
                continue
            if entry.is_file():
                if self._is_audio(entry.name):
                    raise DatasetError(f"{entry}: an audio file directly in {self.train_dir} has no label; put each "
                                       f"clip in a folder named by its label ({self.train_dir}/<label>/...)")
                continue  # a README, a labels list: not a clip
            if not entry.is_dir():
                continue
            label = entry.name
            if any(ch.isspace() for ch in label) or "," in label:
                raise DatasetError(f"{entry}: label folder {label!r} holds whitespace or a comma; the submission "
                                   f"separates labels by spaces: rename it (e.g. {'_'.join(label.replace(',', ' ').split())!r})")
            clips = self._scan(entry)
            if not clips:
                exts = ", ".join(sorted(self.extensions))
                raise DatasetError(f"{entry}: label folder {label!r} holds no audio file ({exts}); add its clips, "
                                   f"or move the folder out of {self.train_dir}")
            rows += [(f"{label}/{c}", label) for c in clips]
        if not rows:
            raise DatasetError(f"{self.train_dir}: no label folders; {self.describe()}")
        table = pd.DataFrame(rows, columns=["fname", "label"]).sort_values("fname", kind="stable", ignore_index=True)
        return table.assign(manually_verified=True, source="train")

    def labels(self) -> list[str]:
        return sorted(self.train_table()["label"].unique().tolist())

    def test_fnames(self) -> list[str]:
        return self._scan(self.test_dir) if self.test_dir.is_dir() else []

    def audio_path(self, split: str, fname: str) -> Path:
        if split == "train":
            return self.train_dir / fname
        if split == "test":
            return self.test_dir / fname
        raise DatasetError(f"unknown split {split!r}; expected train or test")

    def label_files(self) -> list[Path]:
        """None: the folder names are the labels (:meth:`digest` hashes the clips' names and labels)."""
        return []

    def is_present(self) -> bool:
        return self.train_dir.is_dir()

    def digest(self) -> str:
        """sha256 of the sorted ``fname<TAB>label`` lines of the train clips."""
        table = self.train_table()
        lines = sorted(f"{f}\t{lab}\n" for f, lab in zip(table["fname"], table["label"]))
        return hashlib.sha256("".join(lines).encode()).hexdigest()

    def test_labels(self) -> pd.DataFrame | None:
        """The clips below ``test/<label>/`` with that label (the others are tagged, not scored); None when
        none is. A test subfolder not named like a train label is logged with its clip count."""
        fnames = self.test_fnames()
        if not fnames:
            return None
        labels = set(self.labels())
        rows, other = [], {}
        for f in fnames:
            parts = f.split("/")
            if len(parts) > 1 and parts[0] in labels:
                rows.append((f, parts[0]))
            elif len(parts) > 1:
                other[parts[0]] = other.get(parts[0], 0) + 1
        if other:
            log.warning("%s: subfolder(s) not named like a train label, their clips are tagged but not scored: %s",
                        self.test_dir, ", ".join(f"{k}/ ({n} clips)" for k, n in sorted(other.items())))
        return pd.DataFrame(rows, columns=["fname", "label"]) if rows else None

    def test_labels_file(self) -> Path | None:
        """The test folder, whose ``<label>/`` subfolders label its clips (for messages)."""
        return self.test_dir if self.test_dir.is_dir() else None
