"""argparse `type=` checks shared by the commands: a bad value becomes argparse's usage error (status 2)
naming the option, e.g. `ramnet-fla mqar: error: argument --steps: must be an integer >= 1, got 0`."""

from __future__ import annotations

import argparse
import math
import re

DEVICE_PATTERN = re.compile(r'(cpu|cuda)(:\d+)?')


def int_at_least(minimum: int):
    """A `type=`: an int >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def positive_float(text: str) -> float:
    """A `type=`: a finite number > 0 (nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def device(text: str) -> str:
    """A `type=`: 'cpu', 'cuda' or 'cuda:N' (whether CUDA is there is the command's check)."""
    if DEVICE_PATTERN.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    return text


def shard(text: str) -> tuple[int, int]:
    """A `type=`: 'I/N' with 0 <= I < N, this process's share of a sweep (points I, I+N, I+2N, ...)."""
    match = re.fullmatch(r'(\d+)/(\d+)', text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"must be I/N (e.g. 0/2), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise argparse.ArgumentTypeError(f"must be I/N with N >= 1 and 0 <= I < N, got {text!r}")
    return index, count
