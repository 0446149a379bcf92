"""Photo decoding: EXIF orientation, colour modes and formats, resize policies, the decode-once
cache, and the same images at two resolutions."""

import os

import numpy as np
import pytest
from PIL import Image, ImageOps

import tfkd
from tfkd.data import images

RNG = np.random.default_rng(0)


def _picture(height=36, width=60):
    """A smooth picture with distinct corners, so a wrong rotation or flip is obvious."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [255 * x / width, 255 * y / height, 255 * (x + y) / (width + height)], axis=-1
    ).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_applies_it(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.png"  # lossless, so the comparison is exact
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_picture()).save(path, exif=exif.tobytes())
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    (header,) = images.read_headers([str(path)])
    assert header.orientation == orientation
    assert header.upright_size == expected.shape[:2]
    decoded = images.decode_files([str(path)], [expected.shape[:2]])
    np.testing.assert_array_equal(decoded.images[expected.shape[:2]][0], expected)


def test_a_rotated_phone_jpeg_comes_out_upright(tmp_path):
    upright = _picture(48, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(
        path, quality=98, exif=exif.tobytes()
    )
    decoded = images.decode_files([str(path)], [(48, 64)]).images[(48, 64)][0]
    assert np.abs(decoded.astype(int) - upright).mean() < 3
    # Ignoring the tag would give the picture on its side, squeezed: far off.
    sideways = np.asarray(Image.open(path).convert("RGB").resize((64, 48)))
    assert np.abs(sideways.astype(int) - upright).mean() > 20


@pytest.mark.parametrize(
    "mode, fmt",
    [
        ("L", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("RGB", "BMP"),
        ("RGB", "WEBP"),
        ("CMYK", "JPEG"),
        ("RGB", "GIF"),
    ],
)
def test_colour_modes_and_formats_become_rgb(tmp_path, mode, fmt):
    picture = _picture()
    path = tmp_path / f"image.{fmt.lower()}"
    source = Image.fromarray(picture).convert(mode)
    source.save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    with Image.open(path) as image:
        expected = np.asarray(image.convert("RGB")).astype(int)
    decoded = images.decode_files([str(path)], [picture.shape[:2]]).images[picture.shape[:2]][0]
    assert decoded.shape == (*picture.shape[:2], 3)
    tolerance = 8 if fmt == "JPEG" else 1
    assert np.abs(decoded.astype(int) - expected).mean() < tolerance


def test_resize_policies_against_numpy():
    # 40 x 80 picture: left half 50, right half 200 (columns), into a 20 x 20 square.
    picture = np.zeros((40, 80, 3), np.uint8)
    picture[:, :40] = 50
    picture[:, 40:] = 200
    stretched = images.resize(picture, (20, 20), "stretch").numpy()
    np.testing.assert_array_equal(stretched[:, :9], 50)
    np.testing.assert_array_equal(stretched[:, 11:], 200)
    # crop keeps the centre 40 x 40 (columns 20..60): half 50, half 200, same split.
    cropped = images.resize(picture, (20, 20), "crop").numpy()
    np.testing.assert_array_equal(cropped[:, :9], 50)
    np.testing.assert_array_equal(cropped[:, 11:], 200)
    # Make the crop distinguishable from the stretch: a marker column band at 0..10 is cut.
    marked = picture.copy()
    marked[:, :10] = 255
    assert images.resize(marked, (20, 20), "crop").numpy().max() == 200
    assert images.resize(marked, (20, 20), "stretch").numpy().max() == 255
    # pad scales 40 x 80 to 10 x 20 and centres it: rows 0..4 and 15..19 are black.
    padded = images.resize(picture, (20, 20), "pad").numpy()
    np.testing.assert_array_equal(padded[:5], 0)
    np.testing.assert_array_equal(padded[15:], 0)
    np.testing.assert_array_equal(padded[6:14, :9], 50)
    with pytest.raises(ValueError, match="Unknown resize policy 'fit'"):
        images.resize(picture, (20, 20), "fit")


def test_large_jpegs_are_decoded_at_reduced_scale_with_the_same_result(tmp_path):
    big = np.kron(_picture(60, 80), np.ones((16, 16, 1), np.uint8))  # 960 x 1280
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=95)
    (header,) = images.read_headers([str(path)])
    assert images._JPEG_RATIOS[images._jpeg_ratio_index(header, [(96, 128)])] == 8
    assert images._jpeg_ratio_index(header, [(600, 800)]) == 0
    fast = images.decode_files([str(path)], [(96, 128)], headers=[header]).images[(96, 128)][0]
    full = images.decode_files(
        [str(path)], [(96, 128)], headers=[images.Header(1280, 960, 1, False)]
    ).images[(96, 128)][0]
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 2


def test_disk_cache_is_written_once_and_reused_until_a_file_changes(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(_picture(20 + i, 30)).save(path)
        paths.append(str(path))
    cache = tmp_path / "cache"
    first = images.decode_files(paths, [(16, 16), (24, 24)], directory=str(cache), name="train")
    assert isinstance(first.images[(16, 16)], np.memmap)
    assert sorted(os.listdir(cache)) == ["train.json", "train_16x16.npy", "train_24x24.npy"]
    calls = []
    again = images.decode_files(
        paths, [(16, 16), (24, 24)], directory=str(cache), name="train", progress=calls.append
    )
    assert calls == []  # nothing decoded
    np.testing.assert_array_equal(again.images[(24, 24)], first.images[(24, 24)])
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(paths[1])
    os.utime(paths[1], ns=(1, 1))
    changed = images.decode_files(
        paths, [(16, 16), (24, 24)], directory=str(cache), name="train", progress=calls.append
    )
    assert calls and changed.images[(16, 16)][1].max() == 0


def test_an_undecodable_file_is_named_and_nothing_is_cached(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.fromarray(_picture()).save(good)
    bad.write_bytes(b"\xff\xd8 truncated")
    result = images.decode_files(
        [str(good), str(bad)], [(16, 16)], directory=str(tmp_path / "cache")
    )
    assert result.bad == [str(bad)]
    assert not [n for n in os.listdir(tmp_path / "cache") if not n.startswith(".")]


def _photo_folder(root, sizes=((120, 90), (64, 200), (300, 160))):
    for split, count in (("train", 6), ("val", 2)):
        for label, name in enumerate(("cat", "dog")):
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(count):
                width, height = sizes[i % len(sizes)]
                pixels = np.full((height, width, 3), 40 + 150 * label, np.uint8)
                pixels[: height // 4] = 255 - pixels[: height // 4]
                Image.fromarray(pixels).save(root / split / name / f"{i}.jpg")
    return root


def test_a_folder_at_two_resolutions_holds_the_same_images_in_the_same_order(tmp_path):
    root = _photo_folder(tmp_path / "photos")
    splits = tfkd.data.load(
        f"folder:{root}", image_size=(32, 32), extra_sizes=[(64, 48)], resize="crop"
    )
    assert splits.preprocessing.image_size == (32, 32)
    assert splits.preprocessing.resize == "crop"
    big = splits.at((64, 48))
    assert (
        big.preprocessing.image_size == (64, 48)
        and big.preprocessing.mean == splits.preprocessing.mean
    )
    small_x, small_y = zip(*splits.train.as_numpy_iterator())
    big_x, big_y = zip(*big.train.as_numpy_iterator())
    assert small_y == big_y
    assert np.stack(small_x).shape[1:] == (32, 32, 3) and np.stack(big_x).shape[1:] == (64, 48, 3)
    # The same picture: the big one shrunk matches the small one.
    shrunk = images.resize(big_x[0], (32, 32), "stretch").numpy().astype(int)
    assert np.abs(shrunk - small_x[0]).mean() < 12
    with pytest.raises(ValueError, match=r"not \(20, 20\): load it with extra_sizes"):
        splits.at((20, 20))


def test_a_folder_of_mixed_sizes_defaults_to_224_and_uniform_small_images_keep_theirs(tmp_path):
    mixed = tfkd.data.load(f"folder:{_photo_folder(tmp_path / 'mixed')}")
    assert mixed.preprocessing.image_size == tfkd.data.DEFAULT_IMAGE_SIZE
    uniform = tfkd.data.load(f"folder:{_photo_folder(tmp_path / 'uniform', sizes=((40, 30),))}")
    assert uniform.preprocessing.image_size == (30, 40)


@pytest.mark.parametrize("size", [(8, 8), (32,), (32, 32, 3), ("a", 3), (15, 200)])
def test_bad_image_sizes_are_refused(tmp_path, size):
    root = _photo_folder(tmp_path / "photos")
    with pytest.raises(ValueError, match="two numbers H,W of at least 16"):
        tfkd.data.load(f"folder:{root}", image_size=size)


def test_disk_data_cache_goes_to_the_cache_dir_and_memory_writes_nothing(tmp_path):
    root = _photo_folder(tmp_path / "photos")
    tfkd.data.load(
        f"folder:{root}", image_size=(16, 16), cache="memory", cache_dir=str(tmp_path / "cache")
    )
    assert not (tmp_path / "cache").exists()
    splits = tfkd.data.load(
        f"folder:{root}", image_size=(16, 16), cache="disk", cache_dir=str(tmp_path / "cache")
    )
    written = [f for _, _, fs in os.walk(tmp_path / "cache") for f in fs]
    assert sorted(written) == sorted(
        [
            "train.json",
            "train_16x16.npy",
            "validation.json",
            "validation_16x16.npy",
            "test.json",
            "test_16x16.npy",
        ]
    )
    x, _ = next(iter(splits.train.batch(100)))
    assert x.shape == (len(x), 16, 16, 3)
