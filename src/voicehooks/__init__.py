"""voicehooks: webhook subscriptions for voice call life-cycle events."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voicehooks")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
