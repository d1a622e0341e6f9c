"""Is this host a VM? diagnose says where the fix belongs, and apply warns before it changes a guest.

Pure code over a Snapshot: systemd-detect-virt's answer when it ran, else the CPU's hypervisor flag,
else a virtual DMI vendor. Kept apart from diagnose so that apply does not import the device model.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlxfix.facts import Snapshot

__all__ = ["detect_vm"]

_VIRTUAL_VENDORS = (
    ("QEMU", "qemu"),
    ("KVM", "kvm"),
    ("VMware", "vmware"),
    ("VirtualBox", "oracle"),
    ("Xen", "xen"),
    ("Microsoft Corporation Virtual", "microsoft"),
)
_HYPERVISOR_FLAG = re.compile(r"^flags\s*:.*\bhypervisor\b", re.MULTILINE)


def detect_vm(snap: Snapshot, dmi: str) -> tuple[str | None, str]:
    """(what kind of VM, or None on bare metal; the evidence). ``dmi``: sys_vendor and product_name."""
    virt = snap.outputs.get("systemd-detect-virt --vm", "").strip()
    if virt and virt != "none":
        return virt, f"systemd-detect-virt --vm: {virt}"
    if virt == "none":
        return None, "systemd-detect-virt --vm: none"
    if _HYPERVISOR_FLAG.search(snap.text("/proc/cpuinfo") or ""):
        return "vm", "the CPU has the hypervisor flag (/proc/cpuinfo)"
    for marker, name in _VIRTUAL_VENDORS:
        if marker.lower() in dmi.lower():
            return name, f"DMI says {dmi}"
    return None, "no hypervisor flag, no virtual DMI vendor"
