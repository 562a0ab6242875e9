"""Errors a user can cause. The CLI prints their message as one line and exits with status 2."""


class SnnkitError(Exception):
    """Base class: the message is one sentence that says what to do."""

    def __str__(self) -> str:
        text = super().__str__()
        # A DataLoader worker's error reaches the main process re-raised as
        # type(e)("Caught ... Original Traceback ...\n<module>.<Class>: <message>"): keep the message.
        if text.startswith("Caught ") and "Original Traceback" in text:
            return text.rstrip().splitlines()[-1].split(": ", 1)[-1]
        return text


def one_line(cause: BaseException) -> str:
    """An exception's text on one line (PyTorch's state-dict errors span several)."""
    return " ".join(str(cause).split())


OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "failed to allocate memory", "bad_alloc")


def out_of_memory(e: BaseException) -> bool:
    """``MemoryError`` (numpy's too), torch's ``OutOfMemoryError`` and allocator messages (CPU
    ``DefaultCPUAllocator``, CUDA), and onnxruntime's allocation failures."""
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or any(m in str(e).lower() for m in OUT_OF_MEMORY))


class ConfigError(SnnkitError, ValueError):
    pass


class DataError(SnnkitError):
    pass


class CheckpointError(SnnkitError):
    pass


class WriteError(SnnkitError):
    """A file could not be written (disk full, read-only, a folder in the way)."""


class DivergedError(SnnkitError):
    """Training produced a non-finite loss or weight."""


class ConversionError(SnnkitError, ValueError):
    """A model that snnkit cannot convert exactly; the message names the module's path and type."""
