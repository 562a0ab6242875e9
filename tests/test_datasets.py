"""Every dataset loader on tiny files written here in the real on-disk formats, and its errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snnkit.data import DATASETS, encode, load_dataset
from snnkit.data.augment import Cutout, EventAugment, cifar_train
from snnkit.data.cifar10_dvs import FRAMES_DIR, split_per_class
from snnkit.data.idx import FASHION_MNIST_ROOT
from snnkit.errors import DataError

from data_files import (DVS_CLASSES, dump, write_cifar10, write_dvs_frames, write_idx, write_idx_set,
                        write_image_folders)

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def normalized(pixels: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 ``[C, H, W]`` -> what the test transforms must return."""
    x = torch.from_numpy(pixels.astype(np.float32) / 255)
    return (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


# --- idx (MNIST, Fashion-MNIST) -------------------------------------------------------------------
@pytest.fixture
def idx_root(tmp_path):
    return tmp_path, write_idx_set(tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_reads_gz_and_plain_files_and_normalises_with_train_statistics(idx_root, name):
    root, arrays = idx_root
    b = load_dataset(name, str(root))
    train_pixels = arrays["train-images-idx3-ubyte.gz"].astype(np.float64) / 255
    mean, std = b.normalization["mean"][0], b.normalization["std"][0]
    # exact integer sums against NumPy's float64: ≲ n·2⁻⁵³ ≈ 1e-12 relative for these n ≈ 10⁴ pixels
    assert mean == pytest.approx(train_pixels.mean(), rel=1e-9)
    assert std == pytest.approx(train_pixels.std(ddof=1), rel=1e-9)
    assert (len(b.train), len(b.test), b.input_shape, b.num_classes) == (12, 5, (1, 28, 28), 10)
    x, y = b.test[2]
    assert y == 4 and type(x) is torch.Tensor
    # two float32 evaluations of (p/255 − mean)/std, p/255 ≤ 1: each ≤ 4 roundings of values ≤ 1 + mean, over std
    bound = 4 * torch.finfo(torch.float32).eps * (1 + mean) / std
    torch.testing.assert_close(x, normalized(arrays["t10k-images-idx3-ubyte"][2][None], [mean], [std]),
                               rtol=0, atol=bound)


def test_idx_errors_name_the_missing_or_broken_file(idx_root):
    root, _ = idx_root
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"^mnist: .* has no t10k-labels-idx1-ubyte\[\.gz\]; expected "
                                        r"train-images-idx3-ubyte, .* \(each optionally \.gz\) there$"):
        load_dataset("mnist", str(root))
    (root / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01")  # float type code
    with pytest.raises(DataError, match="is not an idx file of unsigned bytes"):
        load_dataset("mnist", str(root))
    write_idx(root / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8))
    (root / "t10k-images-idx3-ubyte").write_bytes((root / "t10k-images-idx3-ubyte").read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated or malformed"):
        load_dataset("mnist", str(root))
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read .*train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", str(root))


@pytest.mark.slow
@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_package():
    b = load_dataset("fashion_mnist")
    assert (len(b.train), len(b.test), b.input_shape) == (60000, 10000, (1, 28, 28))
    assert torch.bincount(b.train.labels).tolist() == [6000] * 10
    assert b.normalization["mean"][0] == pytest.approx(0.2860, abs=1e-4)


# --- CIFAR ----------------------------------------------------------------------------------------
def test_cifar10_python_batches(tmp_path):
    written = write_cifar10(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):  # data.root or the folder itself
        b = load_dataset("cifar10", str(root))
        assert (len(b.train), len(b.test), b.input_shape) == (10, 2, (3, 32, 32))
        assert b.class_names == [f"class{i}" for i in range(10)]
        data, labels = written["test_batch"]
        x, y = b.test[1]
        assert y == labels[1]
        torch.testing.assert_close(x, normalized(data[1].reshape(3, 32, 32), CIFAR10_MEAN, CIFAR10_STD))
        assert b.train[9][1] == written["data_batch_5"][1][1]
        assert b.normalization == {"scale": 1 / 255, "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}


def test_cifar100_python_archive(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for split, n in (("train", 4), ("test", 3)):
        dump(folder / split, {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                              "fine_labels": [99, 0, 42, 7][:n], "coarse_labels": [0] * n})
    dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []})
    b = load_dataset("cifar100", str(tmp_path))
    assert (len(b.train), len(b.test), b.num_classes) == (4, 3, 100)
    assert [b.test[i][1] for i in range(3)] == [99, 0, 42]
    assert b.normalization["mean"] == [0.5071, 0.4867, 0.4408]


def test_cifar10_image_folders(tmp_path):
    classes = [f"k{i}" for i in range(10)]
    pixels = write_image_folders(tmp_path, ("train", "test"), classes)
    b = load_dataset("cifar10", str(tmp_path))
    assert b.class_names == classes and (len(b.train), len(b.test)) == (10, 10)
    x, y = b.test[3]
    assert y == 3
    torch.testing.assert_close(x, normalized(pixels["test/k3"].transpose(2, 0, 1), CIFAR10_MEAN, CIFAR10_STD))
    assert b.train[0][0].shape == (3, 32, 32)


def test_cifar_errors(tmp_path):
    with pytest.raises(DataError, match=r"^cifar10: .* holds neither layout; expected cifar-10-batches-py/ "
                                        r"holding data_batch_1, .*, test_batch, batches.meta, or train/"):
        load_dataset("cifar10", str(tmp_path))
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match=r"cannot read .*data_batch_3 \(\w+\); replace it"):
        load_dataset("cifar10", str(tmp_path))
    dump(tmp_path / "cifar-10-batches-py" / "data_batch_3",
         {"data": np.zeros((1, 3072), np.uint8), "labels": [10]})
    with pytest.raises(DataError, match="malformed"):
        load_dataset("cifar10", str(tmp_path))
    dump(tmp_path / "cifar-10-batches-py" / "data_batch_3", {"data": np.zeros((1, 3072), np.uint8), "labels": [9]})
    load_dataset("cifar10", str(tmp_path))
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"test_batch is missing"):
        load_dataset("cifar10", str(tmp_path))


def test_image_folders_must_agree(tmp_path):
    write_image_folders(tmp_path, ("train",), [f"k{i}" for i in range(10)])
    write_image_folders(tmp_path / "other", ("test",), [f"j{i}" for i in range(10)])
    (tmp_path / "other" / "test").rename(tmp_path / "test")
    with pytest.raises(DataError, match="hold different class folders"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar_train_pipeline_is_seeded_and_keeps_the_shape():
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    pipeline = cifar_train(CIFAR10_MEAN, CIFAR10_STD)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append(pipeline(img))
    assert outs[0].shape == (3, 32, 32) and outs[0].dtype == torch.float32
    torch.testing.assert_close(outs[0], outs[1])


def test_cutout_zeroes_one_clipped_square():
    ones = torch.ones(3, 32, 32)
    sizes = set()
    for seed in range(50):
        torch.manual_seed(seed)
        holes = (Cutout(16)(ones) == 0).all(0)
        rows, cols = holes.any(1).nonzero().flatten(), holes.any(0).nonzero().flatten()
        assert holes.sum() == len(rows) * len(cols)  # a rectangle
        assert len(rows) <= 16 and len(cols) <= 16
        sizes.add((len(rows), len(cols)))
    assert (16, 16) in sizes and len(sizes) > 1  # full squares inside, clipped ones at borders


# --- ImageNet -------------------------------------------------------------------------------------
def test_imagenet_folders(tmp_path):
    wnids = ["n01440764", "n01443537"]
    write_image_folders(tmp_path, ("train", "val"), wnids, size=(80, 60), suffix=".JPEG")
    b = load_dataset("imagenet", str(tmp_path))
    assert b.class_names == wnids and b.input_shape == (3, 224, 224)
    x, y = b.test[1]
    assert y == 1 and x.shape == (3, 224, 224)
    torch.testing.assert_close(b.test[1][0], x)  # resize + centre crop: no randomness
    assert b.train[0][0].shape == (3, 224, 224)
    (tmp_path / "val").rename(tmp_path / "validation")
    with pytest.raises(DataError, match=r"^imagenet: .*val is missing; expected train/<wnid>/\*.JPEG and val/"):
        load_dataset("imagenet", str(tmp_path))


# --- CIFAR10-DVS ----------------------------------------------------------------------------------
def resized(f: np.ndarray) -> torch.Tensor:
    return F.interpolate(torch.from_numpy(f), size=(48, 48), mode="bilinear", antialias=True)


def test_cifar10_dvs_frames_split_and_encoding(tmp_path):
    frames = write_dvs_frames(tmp_path, per_class=10)
    b = load_dataset("cifar10_dvs", str(tmp_path))
    assert (b.kind, b.input_shape, b.class_names) == ("event", (2, 48, 48), DVS_CLASSES)
    assert (len(b.train), len(b.test)) == (90, 10)
    assert sorted(b.test[i][1] for i in range(10)) == list(range(10))  # one test sample per class
    x, y = b.test[0]
    assert x.shape == (10, 2, 48, 48) and y == 0
    name = Path(b.test.dataset.samples[b.test.indices[0]][0]).stem.split("_")[-1]
    torch.testing.assert_close(x, resized(frames[f"airplane/{name}"]))
    batch = torch.stack([b.test[i][0] for i in range(3)])  # [B, T, C, H, W]
    torch.testing.assert_close(encode(batch, 10, "event")[4, 2], batch[2, 4])


def test_cifar10_dvs_train_samples_are_flipped_and_rolled_frames(tmp_path):
    write_dvs_frames(tmp_path, per_class=10)
    b = load_dataset("cifar10_dvs", str(tmp_path))
    path = b.train.dataset.samples[b.train.indices[0]][0]
    plain = resized(np.load(path)["frames"])
    torch.manual_seed(0)
    x, _ = b.train[0]
    candidates = [f.roll((dy, dx), dims=(-2, -1)) for f in (plain, plain.flip(-1))
                  for dy in range(-5, 6) for dx in range(-5, 6)]
    assert any(torch.equal(x, c) for c in candidates)


def signed(shift: int, n: int = 48) -> int:
    return shift if shift < n // 2 else shift - n


def test_event_augment_covers_the_shifts_and_both_orientations():
    rows, cols = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    frames = (100 * rows + cols).expand(3, 2, 48, 48)  # pixel (i, j) holds 100·i + j
    seen = set()
    for seed in range(300):
        torch.manual_seed(seed)
        out = EventAugment(5)(frames)
        assert torch.equal(out[0, 0], out[2, 1])  # the same for every frame and channel
        corner, right = int(out[0, 0, 0, 0]), int(out[0, 0, 0, 1])
        flipped = (right - corner) % 48 == 47
        col = 47 - corner % 100 if flipped else corner % 100
        seen.add((flipped, signed(-(corner // 100) % 48), signed(-col % 48)))  # out[0, 0] = f[-dy, -dx]
    assert {f for f, _, _ in seen} == {False, True}
    assert {dy for _, dy, _ in seen} == set(range(-5, 6)) == {dx for _, _, dx in seen}


def test_dvs_split_is_fixed_disjoint_and_nine_to_one():
    targets = [c for c in range(10) for _ in range(1000)]
    train, test = split_per_class(targets)
    assert (train, test) == split_per_class(targets)
    assert len(test) == 1000 and len(train) == 9000 and not set(train) & set(test)
    assert torch.bincount(torch.tensor([targets[i] for i in test])).tolist() == [100] * 10
    assert split_per_class(targets, seed=1)[1] != test


@pytest.mark.slow
def test_cifar10_dvs_integrates_converted_events_with_spikingjelly(tmp_path):
    rng = np.random.default_rng(5)
    for c in DVS_CLASSES:
        (tmp_path / "events_np" / c).mkdir(parents=True)
        n = 200
        np.savez_compressed(tmp_path / "events_np" / c / f"cifar10_{c}_0.npz", t=np.sort(rng.integers(0, 10**6, n)),
                            x=rng.integers(0, 128, n), y=rng.integers(0, 128, n), p=rng.integers(0, 2, n))
    b = load_dataset("cifar10_dvs", str(tmp_path))
    written = np.load(tmp_path / FRAMES_DIR / "cat" / "cifar10_cat_0.npz")["frames"]
    assert written.shape == (10, 2, 128, 128) and written.sum() == 200  # every event counted once
    assert len(b.train) == 10 and len(b.test) == 0  # ⌊1/10⌋ = 0 test samples per class


def test_cifar10_dvs_errors(tmp_path):
    with pytest.raises(DataError, match=rf"^cifar10_dvs: .* holds neither {FRAMES_DIR}/ nor events_np/"):
        load_dataset("cifar10_dvs", str(tmp_path))
    (tmp_path / FRAMES_DIR / "airplane").mkdir(parents=True)
    np.savez_compressed(tmp_path / FRAMES_DIR / "airplane" / "a.npz", frames=np.zeros((4, 2, 8, 8)))
    with pytest.raises(DataError, match="has class folders airplane; expected one per class: airplane, automobile"):
        load_dataset("cifar10_dvs", str(tmp_path))
    write_dvs_frames(tmp_path / "x", per_class=1)
    (tmp_path / "x" / FRAMES_DIR / "airplane" / "cifar10_airplane_0.npz").unlink()
    np.savez_compressed(tmp_path / "x" / FRAMES_DIR / "airplane" / "a.npz", frames=np.zeros((4, 2, 8, 8)))
    b = load_dataset("cifar10_dvs", str(tmp_path / "x"))
    with pytest.raises(DataError, match=r"holds frames of shape \[4, 2, 8, 8\]; expected \[10, 2, H, W\]"):
        b.train[0]


# --- every registered dataset ---------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in DATASETS.names() if n != "digits"])
def test_every_file_dataset_says_where_its_files_go(tmp_path, name):
    with pytest.raises(DataError, match=rf"^{name}: .*expected"):
        load_dataset(name, str(tmp_path))
    with pytest.raises(DataError, match=rf"^{name}: data.root .*missing is not a directory; it should hold"):
        load_dataset(name, str(tmp_path / "missing"))
    if name != "fashion_mnist":  # which has a default root
        with pytest.raises(DataError, match=rf"^{name} reads local files and never downloads: set data.root"):
            load_dataset(name, None)
