"""Faster inference with the same numbers: the network's memory format, in-place activations and ``torch.compile``.

:func:`prepare_network` readies a network once, before its tiles run (``rawsr.predict``, ``rawsr.evaluate``):

- ``memory_format="channels_last"`` stores every convolution weight as NHWC. oneDNN (CPU) and cuDNN then run each
  convolution in that layout and hand it on to the next layer, so no activation is ever reordered; the inputs need no
  conversion (the first convolution's output follows its weight). On the AVX-512 CPU of docs/results.md the paper's
  network ran 1.68x faster than in PyTorch's default NCHW layout.
- The activation that follows a convolution in an ``nn.Sequential`` runs in place: one large tensor less per layer.
- ``compile=True`` runs the network through ``torch.compile`` (Inductor) with its weights frozen as constants, which
  fuses each LeakyReLU into its convolution, packs the weights once and merges the element-wise work (the dense
  blocks' concatenations, pooling, the colour transform) into few loops. The first call
  compiles (about a minute on a 2-core CPU; Inductor keeps the result in its on-disk cache, ``TORCHINDUCTOR_CACHE_DIR``,
  so a later process with the same network and tile takes seconds); it needs a C++ compiler on a CPU. Where compiling
  fails, a warning says so once and the network runs eagerly.

Every option gives the plain forward's result within float32 rounding (``tests/test_accelerate.py``).

:func:`retain_freed_memory` is for the process around the network rather than the network itself: glibc's ``malloc``
maps every block above 32 MiB afresh from the system and unmaps it when freed, so each of the network's large
activations (a batch of four tiles of 256 at width 128: 134 MB) is page-faulted and zeroed again on every call. Within
the context, freed blocks stay in the process and the next call reuses them (the effect of the jemalloc or tcmalloc
preload that CPU tuning guides recommend, without a preload).

:func:`network_flops` counts the multiply-adds of a forward pass; :func:`native_bf16` says whether a device computes
bfloat16 natively, the one case where ``precision=bf16`` is faster rather than only smaller.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("rawsr.inference")

MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
"""Names of the memory formats a network can run in: NHWC (``channels_last``) or PyTorch's default NCHW."""

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ACTIVATIONS = (nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.ELU, nn.Hardtanh)
"""Activations with an ``inplace`` flag that :func:`activations_in_place` may set."""

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags of x86 CPUs that compute bfloat16 natively (AVX-512 BF16 dot products, AMX tiles)."""


def set_memory_format(net: nn.Module, memory_format: str) -> nn.Module:
    """Convert the 4-D weights of ``net`` to ``memory_format`` (a key of :data:`MEMORY_FORMATS`), in place; return it.

    Raises:
        ValueError: an unknown name.
    """
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {list(MEMORY_FORMATS)}, got {memory_format!r}")
    return net.to(memory_format=MEMORY_FORMATS[memory_format])


def activations_in_place(net: nn.Module) -> int:
    """Let each activation that directly follows a convolution in an ``nn.Sequential`` overwrite the convolution's
    output instead of allocating its own. The convolution's output is used by nothing else there, and its backward
    does not need it, so results and gradients are unchanged. Returns how many activations were switched."""
    switched = 0
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module)
        for before, after in zip(children, children[1:], strict=False):
            if isinstance(before, CONVOLUTIONS) and isinstance(after, ACTIVATIONS) and not after.inplace:
                after.inplace = True
                switched += 1
    return switched


def _pad_batch(t: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """``t (n, ...)`` extended to ``(size, ...)`` by repeating its last item (``None`` stays ``None``)."""
    if t is None or t.shape[0] >= size:
        return t
    return torch.cat([t, t[-1:].expand(size - t.shape[0], *t.shape[1:])])


class CompiledNetwork(nn.Module):
    """``net`` through ``torch.compile`` (Inductor, one static graph, weights frozen as constants under no-grad).

    ``forward(raw (n, 1, H, W), ref (n, 3, H, W), wb=None, ccm=None)`` as ``net``'s; it returns ``net``'s outputs.
    A batch smaller than the largest seen so far is padded to it (its last tile repeated) and the padding dropped
    from the outputs, so the last, partial batch of tiles does not compile a second graph. If compiling fails, a
    warning names the error and ``net`` runs eagerly from then on.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.batch = 0
        self.eager = False
        # A compiled bound method, not a module: the network's parameters stay registered once, under ``net``.
        self._compiled = torch.compile(net.forward, dynamic=False)

    def forward(self, raw, ref, wb=None, ccm=None) -> dict[str, torch.Tensor]:
        """``net(raw, ref, wb=wb, ccm=ccm)``, compiled; outputs ``(n, 3, sH, sW)`` each."""
        if self.eager:
            return self.net(raw, ref, wb=wb, ccm=ccm)
        n = (raw if raw is not None else ref).shape[0]
        self.batch = max(self.batch, n)
        args = [_pad_batch(t, self.batch) for t in (raw, ref, wb, ccm)]
        try:
            out = self._compiled_forward(*args)
        except Exception as error:  # the backend's failures have no common type (compiler, device, platform)
            log.warning("compile: torch.compile failed, the network runs eagerly from now on (%s)", error)
            self.eager = True
            return self.net(raw, ref, wb=wb, ccm=ccm)
        return {key: value[:n] for key, value in out.items()}

    def _compiled_forward(self, raw, ref, wb, ccm) -> dict[str, torch.Tensor]:
        from torch._inductor import config as inductor_config  # freezing is only reachable through this config

        with inductor_config.patch(freezing=not torch.is_grad_enabled()):
            return self._compiled(raw, ref, wb=wb, ccm=ccm)


def prepare_network(net: nn.Module, memory_format: str = "channels_last", compile: bool = False) -> nn.Module:
    """Ready ``net`` for inference: evaluation mode, ``memory_format`` (see :data:`MEMORY_FORMATS`), in-place
    activations, and, with ``compile``, :class:`CompiledNetwork`.

    ``net`` itself is converted (as ``nn.Module.to`` does); call the returned module, which has ``net``'s
    ``forward(raw, ref, wb=None, ccm=None)`` and gives its results within float32 rounding.

    Raises:
        ValueError: an unknown ``memory_format`` or a ``compile`` that is not a bool.
    """
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be true or false, got {compile!r}")
    set_memory_format(net.eval(), memory_format)
    activations_in_place(net)
    return CompiledNetwork(net) if compile else net


def network_flops(net: nn.Module, *inputs: torch.Tensor, **kwargs) -> int:
    """Floating-point operations (2 per multiply-add) of the convolutions and transposed convolutions in one
    ``net(*inputs, **kwargs)``, counted by ``torch.utils.flop_counter.FlopCounterMode``; the other layers (the
    attention's tiny matrix products, element-wise work) are left out. Runs the forward pass once, without grad."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(*inputs, **kwargs)
    counts = counter.get_flop_counts().get("Global", {})
    return int(sum(n for op, n in counts.items() if "convolution" in str(op)))


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in the text of ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""


def native_bf16(device: torch.device | str, flags: Iterable[str] | None = None) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA device that supports it, or a CPU with one of
    :data:`BF16_CPU_FLAGS` (read from ``/proc/cpuinfo`` unless ``flags`` are given; ``False`` where there is none).
    Elsewhere bfloat16 autocast is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    flags = cpu_flags(_read_cpuinfo()) if flags is None else set(flags)
    return any(flag in flags for flag in BF16_CPU_FLAGS)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
"""glibc ``mallopt`` parameters (``<malloc.h>``): the free memory at the heap's top above which ``free`` returns it to
the system, and the most blocks ``malloc`` may map separately."""
GLIBC_DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}
"""glibc's default values of the parameters :func:`retain_freed_memory` changes, restored on exit."""
RETAINED = {M_TRIM_THRESHOLD: 2**31 - 1, M_MMAP_MAX: 0}
"""Within :func:`retain_freed_memory`: every block from the heap, and the heap trimmed only when 2 GiB at its top are
free (``mallopt`` takes an ``int``)."""


def _glibc() -> ctypes.CDLL | None:
    """The C library of this process when it is glibc (the one with ``mallopt`` and ``malloc_trim``), else ``None``."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextmanager
def retain_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the context, memory the process frees stays in it for the next allocation instead of going back to the
    system; on exit glibc's defaults return and the free memory goes back (``malloc_trim``).

    With glibc (Linux), every allocation then comes from the heap (``M_MMAP_MAX=0``) and the heap is not trimmed
    (below 2 GiB free): the network's large activations reuse the pages of the previous call instead of page-faulting
    and zeroing fresh ones.
    The process's peak memory is then what it has held at once, as before, but it is held until the context ends.
    Yields whether the setting took effect: ``False`` when ``enabled`` is false or the C library is not glibc (musl,
    macOS, Windows), where nothing changes. Process-wide: meant for an entry point's run, not for a library call.
    """
    libc = _glibc() if enabled else None
    if libc is None:
        if enabled:
            log.debug("retain_freed_memory: the C library is not glibc; allocation is left as it is")
        yield False
        return
    for param, value in RETAINED.items():
        libc.mallopt(param, value)
    try:
        yield True
    finally:
        for param, value in GLIBC_DEFAULTS.items():
            libc.mallopt(param, value)
        libc.malloc_trim(ctypes.c_size_t(0))
