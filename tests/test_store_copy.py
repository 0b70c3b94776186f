"""store.feature_store._copy_file, the copy every write session starts from (a new version of the store):
byte for byte in the kernel (os.copy_file_range), byte for byte in user space where the kernel says no,
and a full disk is an error, never a silent fallback or a short copy."""
import errno
import os

import pytest

from store import feature_store


def _source(tmp_path, size=3 * (1 << 20) + 12345):
    data = os.urandom(size)
    src = tmp_path / "src.h5"
    src.write_bytes(data)
    return src, data


def test_copies_every_byte(tmp_path):
    src, data = _source(tmp_path)
    dst = tmp_path / "dst.h5"
    feature_store._copy_file(str(src), str(dst))
    assert dst.read_bytes() == data


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP])
def test_falls_back_to_user_space_where_the_kernel_refuses(tmp_path, monkeypatch, code):
    src, data = _source(tmp_path)
    dst = tmp_path / "dst.h5"
    dst.write_bytes(b"x" * (5 << 20))  # an older, longer file at the destination: replaced, not kept

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    monkeypatch.setattr(feature_store, "_COPY_BYTES", 1 << 20)  # several user-space blocks
    feature_store._copy_file(str(src), str(dst))
    assert dst.read_bytes() == data


def test_without_copy_file_range(tmp_path, monkeypatch):
    src, data = _source(tmp_path)
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    dst = tmp_path / "dst.h5"
    feature_store._copy_file(str(src), str(dst))
    assert dst.read_bytes() == data


def test_a_full_disk_is_an_error(tmp_path, monkeypatch):
    src, _ = _source(tmp_path)
    calls = []

    def full(fd_in, fd_out, count, *args, **kwargs):
        calls.append(count)
        if len(calls) == 1:  # the first part lands, then the disk is full
            return os.write(fd_out, os.read(fd_in, min(count, 1 << 20)))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "copy_file_range", full, raising=False)
    with pytest.raises(OSError) as e:
        feature_store._copy_file(str(src), str(tmp_path / "dst.h5"))
    assert e.value.errno == errno.ENOSPC
