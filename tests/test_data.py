"""Real loaders: MNIST IDX (shared files), downloads with checksums, arrays, image folders."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.data import binarize_fixed, load_data
from vaekit.errors import DataError
from vaekit.mnist import MNIST_FILES, download_mnist


def test_mnist_from_idx_files(mnist_dir):
    test = load_data("mnist", "test", mnist_dir)
    assert test.x.shape == (10000, 1, 28, 28) and test.x.dtype == torch.float32
    assert test.image and 0 <= test.x.min() and test.x.max() == 1.0
    assert abs(float(test.x.mean()) * 255 - 33.791) < 0.01  # published mean pixel value
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    bits = binarize_fixed(test.x[:100])
    assert torch.equal(bits, binarize_fixed(test.x[:100]))  # the fixed-seed test bits never change
    assert set(bits.unique().tolist()) == {0.0, 1.0}


def test_mnist_checksums_refuse_a_damaged_copy(mnist_dir, tmp_path):
    for name, *_ in MNIST_FILES.values():
        shutil.copy(mnist_dir / name, tmp_path / name)
    name = MNIST_FILES[("test", "labels")][0]
    data = bytearray((tmp_path / name).read_bytes())
    data[100] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(DataError, match="not the original MNIST"):
        load_data("mnist", "test", tmp_path)
    with pytest.raises(DataError, match="--data-dir"):
        load_data("mnist", "test", None)


def test_download_verifies_checksums(mnist_dir, tmp_path):
    # a mirror served from the shared files: the real code path, no network needed
    download_mnist(tmp_path / "m", base_url=mnist_dir.as_uri() + "/")
    assert load_data("mnist", "test", tmp_path / "m").x.shape == (10000, 1, 28, 28)
    bad = tmp_path / "badmirror"
    bad.mkdir()
    for name, *_ in MNIST_FILES.values():
        (bad / name).write_bytes(b"not mnist")
    with pytest.raises(DataError, match="sha256"):
        download_mnist(tmp_path / "m2", base_url=bad.as_uri() + "/")
    assert not any((tmp_path / "m2").iterdir())  # nothing half-downloaded is left


def test_digits_splits_are_disjoint_and_complete():
    tr, te, al = (load_data("digits", s) for s in ("train", "test", "all"))
    assert len(tr.x) == 1500 and len(te.x) == 297 and len(al.x) == 1797
    assert tr.x.shape[1:] == (1, 8, 8) and tr.x.max() == 1.0
    assert not (torch.cdist(tr.x[:50].flatten(1), te.x.flatten(1)) == 0).all(1).any()


def test_arrays(tmp_path):
    np.save(tmp_path / "a.npy", np.random.rand(20, 6).astype(np.float32))
    ds = load_data(str(tmp_path / "a.npy"))
    assert ds.x.shape == (20, 6) and not ds.image
    np.save(tmp_path / "imgs.npy", np.random.randint(0, 256, (5, 12, 10, 3), dtype=np.uint8))
    ds = load_data(str(tmp_path / "imgs.npy"))
    assert ds.x.shape == (5, 3, 12, 10) and ds.image and ds.x.max() <= 1
    np.savez(tmp_path / "z.npz", x=np.random.rand(7, 3), labels=np.arange(7))
    ds = load_data(str(tmp_path / "z.npz"))
    assert ds.x.shape == (7, 3) and ds.labels.tolist() == list(range(7))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    with pytest.raises(DataError, match="N >= 1"):
        load_data(str(tmp_path / "empty.npy"))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(DataError, match="NaN"):
        load_data(str(tmp_path / "nan.npy"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="never unpickles"):
        load_data(str(tmp_path / "obj.npy"))  # pickled object arrays are never unpickled


@pytest.mark.parametrize("stream", [False, True])
def test_object_arrays_are_refused_with_the_reason_and_the_fix(tmp_path, stream):
    np.save(tmp_path / "o.npy", np.array([[1, "a"], [2, "b"]], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "o.npz", x=np.array([[1, "a"], [2, "b"]], dtype=object))
    for name in ("o.npy",) if stream else ("o.npy", "o.npz"):
        with pytest.raises(DataError, match=r"dtype=object.*never unpickles.*astype\(float\)"):
            load_data(str(tmp_path / name), stream=stream)


def test_image_folder(tmp_path):
    root = tmp_path / "imgs"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.random.randint(0, 256, (9, 7, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    ds = load_data(str(root))
    assert ds.x.shape == (6, 3, 9, 7) and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(grey / f"{i}.png")
    assert load_data(str(grey)).x.shape == (2, 1, 5, 5)
    alpha = tmp_path / "alpha"  # grey with an alpha channel stays one channel
    alpha.mkdir()
    Image.fromarray(np.full((5, 5, 2), 51, dtype=np.uint8), "LA").save(alpha / "a.png")
    assert torch.allclose(load_data(str(alpha)).x, torch.full((1, 1, 5, 5), 0.2))
    Image.fromarray(np.zeros((6, 5), dtype=np.uint8)).save(grey / "odd.png")
    with pytest.raises(DataError, match="odd.png.*resize"):
        load_data(str(grey))
    (grey / "odd.png").unlink()
    (grey / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png is not a readable image"):
        load_data(str(grey))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_data(str(tmp_path / "emptydir"))
    with pytest.raises(DataError, match="no such file"):
        load_data(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="not a dataset name|no such file"):
        load_data("cifar")


@pytest.mark.parametrize("stream", [False, True])
def test_16_bit_and_float_images_keep_their_values(tmp_path, stream):
    """16-bit PNGs scale by 65535 (an 8-bit conversion would clip them all to white), whether
    loaded at once or streamed, alone, beside 8-bit greyscale or among colour images."""
    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, (3, 6, 5)).astype(np.uint16)  # (N, H, W)
    grey = tmp_path / "grey"
    grey.mkdir()
    for i, a in enumerate(deep):
        Image.fromarray(a).save(grey / f"d{i}.png")
    Image.fromarray(np.full((6, 5), 51, dtype=np.uint8)).save(grey / "e.png")  # 8 bits: 51 / 255 = 0.2
    assert Image.open(grey / "d0.png").mode.startswith("I")
    x = load_data(str(grey), stream=stream).x
    x = x[np.arange(4)] if stream else x
    assert x.shape == (4, 1, 6, 5)
    assert torch.allclose(x[:3, 0], torch.from_numpy(deep / 65535.0).float(), atol=1e-6)
    assert torch.allclose(x[3], torch.full((1, 6, 5), 0.2))
    colour = tmp_path / "colour"
    colour.mkdir()
    Image.fromarray(deep[0]).save(colour / "a.png")
    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(colour / "b.png")
    x = load_data(str(colour), stream=stream).x
    x = x[np.arange(2)] if stream else x
    assert x.shape == (2, 3, 6, 5) and torch.allclose(x[0], torch.from_numpy(deep[0] / 65535.0).float().expand(3, 6, 5))
    floats = tmp_path / "floats"
    floats.mkdir()
    Image.fromarray(np.full((6, 5), 0.25, dtype=np.float32)).save(floats / "f.tiff")
    x = load_data(str(floats), stream=stream).x
    assert torch.allclose(x[np.arange(1)] if stream else x, torch.full((1, 1, 6, 5), 0.25))
    Image.fromarray(np.full((6, 5), 7.0, dtype=np.float32)).save(floats / "g.tiff")
    with pytest.raises(DataError, match="g.tiff has float pixels outside"):
        x = load_data(str(floats), stream=stream).x
        x[np.arange(2)]


def test_dynamic_binarisation_draws_bernoulli_bits():
    from vaekit.data import binarize_dynamic

    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).repeat(20000, 1)  # (N, 5)
    bits = binarize_dynamic(p, torch.Generator().manual_seed(0))
    assert bits.dtype == p.dtype and set(bits.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(bits.mean(0), p[0], atol=0.01, rtol=0)  # P(bit = 1) = intensity
    assert bits[:, 0].sum() == 0 and bits[:, 4].sum() == len(p)  # 0 and 1 stay exact
    again = binarize_dynamic(p, torch.Generator().manual_seed(0))
    assert torch.equal(bits, again)  # the generator alone fixes the bits: resume stays bit-identical


@pytest.mark.parametrize("stream", [False, True])
def test_image_folders_as_users_keep_them(tmp_path, stream):
    """Hidden names are skipped (macOS's ._x.png AppleDouble files carry an image suffix but no
    image; .ipynb_checkpoints is no class), symlinked class folders are followed (a link back up
    once), upper-case suffixes count, EXIF-rotated photos load as they are seen, and images
    loose beside class sub-folders are refused, not made a class named '.'."""
    rng = np.random.default_rng(0)

    def img(path, h=6, w=4, **kw):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, **kw)

    def load(folder):
        ds = load_data(str(folder), stream=stream)
        return ds, (ds.x[np.arange(len(ds.x))] if stream else ds.x)

    root, elsewhere = tmp_path / "pets", tmp_path / "elsewhere" / "dogs"
    (root / "cats" / ".ipynb_checkpoints").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    img(root / "cats" / "a.PNG")
    img(root / "cats" / "b.JPEG", format="JPEG")
    img(root / "cats" / ".ipynb_checkpoints" / "a-checkpoint.png")
    (root / "cats" / "._a.PNG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "cats" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "cats" / "notes.txt").write_text("not an image")
    img(elsewhere / "c.png")
    (root / "dogs").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "up").symlink_to(elsewhere, target_is_directory=True)  # a loop: walked once
    ds, x = load(root)
    assert x.shape == (3, 3, 6, 4) and ds.classes == ["cats", "dogs"] and ds.labels.tolist() == [0, 0, 1]

    (root / "cats" / "gone.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(DataError, match="gone.png is a broken symbolic link"):
        load(root)
    (root / "cats" / "gone.png").unlink()
    img(root / "stray.png")
    with pytest.raises(DataError, match=r"holds 1 image\(s\) of its own, such as stray.png, beside the class "
                                        r"sub-folder\(s\) cats, dogs.*move them into a sub-folder"):
        load(root)

    photos = tmp_path / "photos"  # a phone's portrait photo: stored 4 wide x 6 high, tagged 'turn 90 degrees'
    photos.mkdir()
    stored = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(photos / "portrait.png", exif=exif)
    Image.fromarray(np.rot90(stored, -1).copy()).save(photos / "plain.png")  # the same picture, turned
    ds, x = load(photos)
    assert x.shape == (2, 1, 4, 6) and torch.equal(x[0], x[1])

    gifs = tmp_path / "gifs"  # GIFs are palette images: grey ones are one channel of their exact levels
    gifs.mkdir()
    grey = rng.integers(0, 256, (2, 5, 3), dtype=np.uint8)
    for i, a in enumerate(grey):
        Image.fromarray(a).save(gifs / f"{i}.gif")
    assert Image.open(gifs / "0.gif").mode == "P"
    ds, x = load(gifs)
    assert x.shape == (2, 1, 5, 3) and torch.equal(x[:, 0], torch.from_numpy(grey).float() / 255)


def test_fit_reads_a_tensor_as_it_reads_the_same_numpy_array(tmp_path):
    """One rule for in-memory data: torchvision's uint8 (N, 28, 28) `.data`, an (N, H, W, C)
    tensor and int16 counts are read as the same numpy array would be (and as `vaekit train`
    reads it saved as .npy); a Dataset holding float64 or numpy x is made float32; what cannot
    work is one DataError naming the fix."""
    import vaekit
    from vaekit.data import as_dataset
    from vaekit.evaluate import evaluate

    rng = np.random.default_rng(0)
    for a in (rng.integers(0, 256, (5, 9, 7), dtype=np.uint8), rng.integers(0, 256, (5, 9, 7, 3), dtype=np.uint8),
              rng.random((5, 9, 7, 3)), rng.integers(-9, 9, (5, 4)).astype(np.int16), rng.random((5, 4)) < 0.5):
        t, n = as_dataset(torch.from_numpy(a)), as_dataset(a)
        assert t.x.dtype == torch.float32 and torch.equal(t.x, n.x) and (t.image, t.layout) == (n.image, n.layout)
    assert as_dataset(torch.from_numpy(rng.integers(0, 256, (5, 9, 7), dtype=np.uint8))).layout == "NHW"
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert as_dataset(x).x.dtype == torch.float32 and not as_dataset(x).x.requires_grad
    for x in (torch.rand(6, 1, 4, 4, dtype=torch.float64), np.random.rand(6, 1, 4, 4)):
        ds = vaekit.Dataset(x, None, True, "mine")
        assert as_dataset(ds).x.dtype == torch.float32  # was a dtype error deep in the first matmul
        model = vaekit.fit(ds, vaekit.Config(epochs=0, latent_dim=2, hidden=[4], progress=False))
        assert model.encode(x[:2]).mean.shape == (2, 2)  # float64 or numpy input is read as float32
        assert vaekit.log_likelihood(model, x[:2], k=2).shape == (2,)
        assert evaluate(model, x[:2], k=2)["n"] == 2
        assert model.interpolate(x[0], x[1], steps=3).shape == (3, 1, 4, 4)
    for bad, fragment in [
        (torch.rand(0, 1, 8, 8), r"shape \(0, 1, 8, 8\) \(empty\); need \(N, features...\)"),
        (np.ma.masked_array(np.ones((4, 2)), mask=[[1, 0], [0, 0], [0, 0], [0, 1]]), "2 masked values; fill or drop"),
        (np.ones((3, 2), "timedelta64[s]"), "dtype timedelta64"),
        ([[0.1, 0.2], [0.3, 0.4]], r"numpy.stack\(items\)"),
        (torch.utils.data.TensorDataset(torch.rand(4, 2)), r"dataset.tensors\[0\]"),
        (torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(4, 2))), "fit batches the data itself"),
    ]:
        with pytest.raises(DataError, match=fragment):
            as_dataset(bad)
    with pytest.raises(DataError, match="condition must be numbers"):
        vaekit.fit(torch.rand(4, 2), vaekit.Config(epochs=0, progress=False), condition=np.array(["a"] * 4))
    np.savez(tmp_path / "big.npz", x=np.ones((3, 2)), labels=np.array([0.0, 1e20, 1.0]))  # int64 would wrap
    with pytest.raises(DataError, match="beyond int64"):
        load_data(str(tmp_path / "big.npz"))
    np.save(tmp_path / "cut.npy", np.ones((50, 4)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-40])
    for stream in (False, True):
        with pytest.raises(DataError, match="shorter than its header says"):
            load_data(str(tmp_path / "cut.npy"), stream=stream)


def test_npz_with_one_data_array_beside_its_labels_and_keras_style_files(tmp_path):
    """An .npz of images and labels under other names is read (its one non-label array is the
    data); Keras' mnist.npz (x_train, y_train, x_test, y_test) is refused with the line to run."""
    np.savez(tmp_path / "il.npz", images=np.zeros((5, 4, 4), np.uint8), labels=np.arange(5))
    ds = load_data(str(tmp_path / "il.npz"))
    assert ds.x.shape == (5, 1, 4, 4) and ds.labels.tolist() == list(range(5))
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((5, 4, 4), np.uint8), y_train=np.arange(5),
             x_test=np.zeros((2, 4, 4), np.uint8), y_test=np.arange(2))
    with pytest.raises(DataError, match=r"numpy.savez\('train.npz', x=z\['x_train'\], labels=z\['y_train'\]\)"):
        load_data(str(tmp_path / "mnist.npz"))


def test_two_channel_arrays_show_every_channel_in_a_grid():
    """An array read as 2-channel images (e.g. (N, H, W, 2) pairs in [0, 1]) drew only its first
    channel in a .png grid; each channel is now its own grey cell, an example's side by side."""
    from vaekit.sample import image_grid

    x = torch.zeros(3, 2, 4, 4)
    x[:, 1] = 1.0  # channel 1 white, channel 0 black
    grid = image_grid(x, min_cell=4)  # 2 examples a row: 4 cells of 4 + 5 pad pixels
    assert grid.shape == (2 * 5 + 1, 4 * 5 + 1)
    cells = [grid[1:5, 1 + 5 * j:5 + 5 * j].mean() for j in range(4)]
    assert cells == [0, 255, 0, 255]  # example 0: channel 0, channel 1; example 1: the same


@pytest.mark.parametrize("stream", [False, True])
def test_binary_uint8_images_stay_bits_and_column_labels_are_read(tmp_path, stream):
    """Binarised MNIST saved as uint8 0/1 was divided by 255 like 8-bit pixels: images of 0 and
    0.004, near-black, silently. An integer array holding only 0s and 1s is binary and kept;
    labels saved as a column (N, 1) are one class per example."""
    bits = (np.random.default_rng(0).random((6, 5, 4)) < 0.4).astype(np.uint8)  # (N, H, W)
    np.save(tmp_path / "bits.npy", bits)
    ds = load_data(str(tmp_path / "bits.npy"), stream=stream)
    x = ds.x[np.arange(6)] if stream else ds.x
    assert ds.image and torch.equal(x, torch.from_numpy(bits).float().unsqueeze(1))
    grey = np.full((6, 5, 4), 2, np.uint8)  # one level above 1: 8-bit pixels
    np.save(tmp_path / "grey.npy", grey)
    ds = load_data(str(tmp_path / "grey.npy"), stream=stream)
    assert torch.allclose(ds.x[np.arange(6)] if stream else ds.x, torch.full((6, 1, 5, 4), 2 / 255))
    if not stream:
        from vaekit.data import as_dataset

        assert torch.equal(as_dataset(torch.from_numpy(bits)).x, as_dataset(bits).x)
        np.savez(tmp_path / "col.npz", x=np.ones((4, 2)), labels=np.array([[0], [1], [1], [2]]))
        assert load_data(str(tmp_path / "col.npz")).labels.tolist() == [0, 1, 1, 2]


def test_a_dataset_prints_its_shapes_not_its_values():
    """print(load_data(...)) in a notebook shows what was loaded, not 96,000 numbers."""
    text = repr(load_data("digits"))
    assert text.startswith("Dataset(x (1500, 1, 8, 8) torch.float32, labels (1500,), image=True")
    assert len(text) < 200 and "tensor(" not in text


def test_stream_is_refused_for_the_named_datasets_it_cannot_stream():
    """--stream with digits trained in memory without a word (a .npz is refused the same way)."""
    for name in ("digits", "mnist"):
        with pytest.raises(DataError, match="drop --stream"):
            load_data(name, stream=True, data_dir="unused")
    assert load_data("digits", stream=None).x.shape == (1500, 1, 8, 8)  # the default (auto) is fine
