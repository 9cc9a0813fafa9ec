"""No trainer reads a held-out scan: the folders of the test split, the validation split and the pool's true labels
are watched with Linux inotify (every process, Python or C++ readers alike) while the one-shot trainers train on
a toy dataset that has all of them. Opening, listing or reading anything there counts."""
import ctypes
import os
import shutil
import struct
import sys

import numpy as np
import pytest

from conftest import BIN, run_cmd

IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x1, 0x20, 0o4000
HELD_OUT = ("imagesTs", "labelsTs", "imagesVal", "labelsVal", "labelsUnlabelledOracle")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


class Watch:
    """Records open/read events on files and folders under the given folders (not recursive: they are flat)."""

    def __init__(self, folders):
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(IN_NONBLOCK)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.names = {}
        for f in folders:
            wd = self.libc.inotify_add_watch(self.fd, str(f).encode(), IN_OPEN | IN_ACCESS)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self.names[wd] = os.path.basename(str(f))

    def events(self) -> list:
        out = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            i = 0
            while i < len(buf):
                wd, mask, _, n = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + n].rstrip(b"\0").decode()
                out.append(f"{self.names[wd]}/{name}")
                i += 16 + n

    def close(self):
        os.close(self.fd)


@pytest.fixture
def toy_with_all_splits(toy_planned, tmp_path):
    from toy_data import _write, toy_subject
    root, env, _ = toy_planned
    folder = tmp_path / "raw" / "Dataset901_Toy"
    shutil.copytree(root / "raw" / "Dataset901_Toy", folder)
    (folder / "imagesVal").mkdir()
    (folder / "labelsVal").mkdir()
    img, lab = toy_subject(np.random.default_rng(3))
    _write(img, str(folder / "imagesVal" / "toy_v00_0000.nii.gz"))
    _write(lab, str(folder / "labelsVal" / "toy_v00.nii.gz"))
    # a preprocessed folder of its own: the trainers cache things there (SAM targets, unlabelled scans) that
    # other tests expect to make themselves
    shutil.copytree(root / "pre", tmp_path / "pre")
    return folder, dict(env, nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
                        nnUNet_results=str(tmp_path / "res"))


def test_the_watch_sees_a_read(toy_with_all_splits):
    """The check below can fail: a C++ reader (SimpleITK) opening a test label is seen."""
    import SimpleITK as sitk
    folder, _ = toy_with_all_splits
    w = Watch([folder / h for h in HELD_OUT])
    sitk.ReadImage(str(folder / "labelsTs" / "toy_t00.nii.gz"))
    os.listdir(folder / "labelsVal")
    seen = w.events()
    w.close()
    assert "labelsTs/toy_t00.nii.gz" in seen and "labelsVal/" in seen


@pytest.mark.parametrize("trainer", ["OneShotDistillTrainer_tiny", "RRLMedSAMTrainer_tiny"])
def test_trainers_read_no_held_out_scan(toy_with_all_splits, trainer, tmp_path):
    folder, env = toy_with_all_splits
    w = Watch([folder / h for h in HELD_OUT])
    try:
        run_cmd([f"{BIN}/nnUNetv2_train", "901", "3d_fullres", "all", "-tr", trainer, "-device", "cpu"], env,
                tmp_path)
        seen = w.events()
    finally:
        w.close()
    assert seen == [], f"{trainer} read held-out files: {sorted(set(seen))[:5]}"
