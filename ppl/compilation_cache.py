"""JAX's persistent compilation cache, on by default in a per-user folder.

Compiling a sampler (NUTS's tree building around a model's gradient) takes seconds; the
executable does not change between processes that run the same model with data of the same
shapes. With the cache, the second process that runs a model (a script run again, a notebook
restarted, ``ppl sample`` called twice) loads the compiled program from disk instead of
compiling it.

:func:`configure` runs when ``ppl`` is imported. The folder is, in order:

1. nothing, if JAX's own cache is already set (``JAX_COMPILATION_CACHE_DIR`` or
   ``jax.config.update("jax_compilation_cache_dir", ...)`` before ``import ppl``): the
   user's choice stands;
2. ``PPL_COMPILATION_CACHE``: a folder, or ``0``/``off``/``false``/``no``/``none`` to turn
   the cache off;
3. ``$XDG_CACHE_HOME/ppl/jax`` (``~/.cache/ppl/jax`` when ``XDG_CACHE_HOME`` is unset).

Safety: entries are read and written under a file lock (JAX's LRU cache with a size limit,
``PPL_COMPILATION_CACHE_MAX_BYTES``, default 2 GiB, least recently used entries evicted), so
processes sharing the folder never read a half-written entry. A folder that cannot be created
or written (read-only file systems, another user's folder) leaves the cache off, without
warnings: compilation then works as without a cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax

__all__ = ["CACHE_ENV", "MAX_BYTES_ENV", "cache_dir", "configure", "default_dir"]

CACHE_ENV = "PPL_COMPILATION_CACHE"
MAX_BYTES_ENV = "PPL_COMPILATION_CACHE_MAX_BYTES"
_OFF = {"0", "off", "false", "no", "none", ""}
_DEFAULT_MAX_BYTES = 2 * 1024**3
#: programs that compile faster than this (seconds) are not worth a disk entry
_MIN_COMPILE_SECONDS = 0.2


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/ppl/jax``, or ``~/.cache/ppl/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ppl" / "jax"


def _writable(folder: Path) -> bool:
    """Create ``folder`` if needed and check that a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ppl-probe-"):
            pass
    except OSError:
        return False
    return True


def _max_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV, "")
    try:
        value = int(raw) if raw.strip() else _DEFAULT_MAX_BYTES
    except ValueError:
        raise ValueError(
            f"{MAX_BYTES_ENV} must be a whole number of bytes (e.g. 2147483648), got {raw!r}"
        ) from None
    if value <= 0:
        raise ValueError(f"{MAX_BYTES_ENV} must be positive, got {value}")
    return value


def configure() -> Path | None:
    """Turn JAX's persistent compilation cache on in ppl's folder (see the module docstring).

    Returns:
        The folder in use, or ``None`` when the cache is off (by the environment variable,
        because the folder cannot be written, or because JAX's cache was already set by the
        user, whose folder is then left alone).
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return None
    setting = os.environ.get(CACHE_ENV)
    if setting is not None and setting.strip().lower() in _OFF:
        return None
    folder = Path(setting).expanduser() if setting else default_dir()
    if not _writable(folder):
        return None
    try:
        import filelock  # noqa: F401  (JAX's size-limited cache locks with it)
    except ImportError:  # pragma: no cover - a dependency of ppl
        return None
    jax.config.update("jax_compilation_cache_max_size", _max_bytes())
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder


def cache_dir() -> Path | None:
    """The folder JAX's persistent compilation cache uses now, or ``None``."""
    folder = jax.config.jax_compilation_cache_dir
    return Path(folder) if folder else None
