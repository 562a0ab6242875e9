"""Shared by the resume and distributed tests: a training step that dies part-way through a run."""


def raise_on_call(fn, calls: int, exc: BaseException | type):
    """``fn`` wrapped so that its ``calls``-th call raises ``exc`` (as a kill would); others run it."""
    count = [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        if count[0] == calls:
            raise exc
        return fn(*args, **kwargs)

    return wrapped
