"""Arithmetic on two numbers."""


def add(a, b):
    """a plus b."""
    return a + b


def sub(a, b):
    """a minus b."""
    return a - b
