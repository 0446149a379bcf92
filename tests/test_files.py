import errno
import os

import pytest

from tfkd import files


def test_write_text_replaces_atomically(tmp_path):
    path = tmp_path / "a.json"
    files.write_text(str(path), "one")
    files.write_text(str(path), "two")
    assert path.read_text() == "two" and os.listdir(tmp_path) == ["a.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_path(str(path)) as tmp:
        open(tmp, "wb").write(b"half")
        raise RuntimeError("crash")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.tflite"]


def test_out_of_disk_is_explained_and_earlier_artifacts_stay(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("earlier")
    with pytest.raises(OSError, match="No space left on the device while writing .*report.json"):
        with files.atomic_path(str(path)):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_text() == "earlier" and os.listdir(tmp_path) == ["report.json"]


def test_temporary_name_keeps_the_extension(tmp_path):
    with files.atomic_path(str(tmp_path / "student.keras")) as tmp:
        assert tmp.endswith(".keras") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "w").close()


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        files.write_text(str(tmp_path / "a.txt"), "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_locked_holds_an_exclusive_lock_until_the_block_ends(tmp_path):
    import fcntl

    directory = tmp_path / "shared"
    with files.locked(str(directory)):
        # Another open file description (as another process has) cannot take it meanwhile.
        with open(directory / ".lock", "a") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(directory / ".lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_UN)
