"""Stream the frames of a video with PyAV (FFmpeg), one at a time: a video is never held in memory.

    with open_video("clip.mp4") as video:          # a path or a seekable binary file (zip member)
        video.expected_frames                      # from the container header, 0 when unknown
        for number, rgb in video.frames(every=5):  # 1-based numbers 1, 6, 11, ...; uint8 (H, W, 3)
            ...
        video.decoded, video.shortfall()           # frames decoded; why fewer than announced, or None

A file FFmpeg cannot open raises VideoError (one line: what FFmpeg said). An error in the middle
(a truncated or corrupt stream) ends the iteration and is kept in `video.error`: the frames before
it are good, so the caller keeps them and reports the file.
"""
from __future__ import annotations

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


class VideoError(Exception):
    """A video that cannot be opened or has no video stream (the message says why)."""


def is_video_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def _av():
    try:
        import av
    except ImportError:
        from featheads.core.errors import UserError

        raise UserError('decoding videos needs PyAV; install it with pip install -e ".[faces]"') from None
    return av


class Video:
    def __init__(self, source, threads: int = 0):
        av = _av()
        self._av = av
        try:
            self.container = av.open(source, mode="r")
        except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
            raise VideoError(f"cannot open ({_describe(e)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError("no video stream in the file")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        if threads:
            self.stream.codec_context.thread_count = threads
        self.expected_frames, self.exact = self._expected()
        self.decoded = 0
        self.error: str | None = None

    def _expected(self) -> tuple[int, bool]:
        """Frames the header announces: the exact count (mp4, avi), else duration x frame rate (mkv,
        webm: an estimate), else 0 (unknown)."""
        if self.stream.frames:
            return int(self.stream.frames), True
        rate = self.stream.average_rate or self.stream.guessed_rate
        seconds = None
        if self.stream.duration and self.stream.time_base:
            seconds = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration:
            seconds = self.container.duration / 1_000_000
        if rate and seconds:
            return int(round(seconds * float(rate))), False
        return 0, False

    def shortfall(self) -> str | None:
        """Why the decoded frames fall short of the header (a truncated file), or None."""
        if self.error is not None:
            return self.error
        if not self.expected_frames:
            return None
        slack = 0 if self.exact else max(2, self.expected_frames // 50)
        if self.decoded < self.expected_frames - slack:
            about = "" if self.exact else "about "
            return (f"only {self.decoded} of the {about}{self.expected_frames} frames the header announces "
                    "could be decoded (truncated file?)")
        return None

    @property
    def size(self) -> tuple[int, int]:
        return self.stream.codec_context.width, self.stream.codec_context.height

    def frames(self, every: int = 1, start: int = 1):
        """(number, RGB uint8 array) of frames 1, 1+every, ... (1-based decode order), from `start` on."""
        av = self._av
        try:
            for frame in self.container.decode(self.stream):
                self.decoded += 1
                n = self.decoded
                if n >= start and (n - 1) % every == 0:
                    yield n, frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, OSError, ValueError, EOFError) as e:
            self.error = f"decoding stopped after frame {self.decoded} ({_describe(e)})"

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _describe(e: Exception) -> str:
    """FFmpeg's reason without the file name (the caller names the file)."""
    text = (getattr(e, "strerror", None) or str(e)).strip() or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


def open_video(source, threads: int = 0) -> Video:
    return Video(source, threads=threads)
