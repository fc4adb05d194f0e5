"""The GPUs this process sees, as torch reports them, for the attempt's provenance
(`core.provenance.run_provenance`; core never imports torch)."""

from __future__ import annotations

from xstilts.core.provenance import DeviceFacts


def device_facts() -> DeviceFacts:
    """CUDA devices and their names; none when CUDA is not usable. Never raises: a broken
    driver is no reason to fail the job whose provenance this is."""
    try:
        import torch

        if not torch.cuda.is_available():
            return DeviceFacts(False, 0, ())
        count = torch.cuda.device_count()
        return DeviceFacts(True, count, tuple(torch.cuda.get_device_name(i) for i in range(count)))
    except Exception:  # noqa: BLE001
        return DeviceFacts(False, 0, ())
