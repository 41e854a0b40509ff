"""The function the callable workloads call: nothing."""


def noop(*args, **kwargs):
    return None
