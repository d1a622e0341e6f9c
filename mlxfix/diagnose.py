"""Is this host hit by the Missing UAR failure, and did the fix take? Facts in, verdict out.

What the kernel does: mlx4_core's probe (``__mlx4_init_one``) aborts with "Missing DCS, aborting" when
BAR 0 of a physical function has no memory resource, and "Missing UAR, aborting" when BAR 2 has
none. Both return -ENODEV, logged by the driver core only at debug level; mlx4_en and mlx4_ib load
only after mlx4_core starts. The usual cause: firmware leaves the SR-IOV VF BARs unassigned, a kernel
with CONFIG_PCI_REALLOC_ENABLE_AUTO reallocates ("Automatically enabled pci realloc"), and the
reshuffle leaves BAR 2 zeroed.

Facts come from the kernel's own files first (sysfs BARs, the driver link, /proc/modules,
/proc/cmdline); the log only corroborates. Pure code: the host gathered the files.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from mlxfix import cmdline

if TYPE_CHECKING:
    from mlxfix.facts import Snapshot

__all__ = ["Device", "Diagnosis", "LogLine", "Verification", "advise", "analyse", "device_request", "verify"]

MELLANOX = "0x15b3"
PCI = "/sys/bus/pci/devices"
IORESOURCE_MEM = 0x200
IORESOURCE_UNSET = 0x20000000
MODULES = ("mlx4_core", "mlx4_en", "mlx4_ib", "vfio_pci")
DEVICE_FILES = (
    "vendor",
    "device",
    "subsystem_vendor",
    "subsystem_device",
    "resource",
    "driver",
    "driver_override",
    "sriov_totalvfs",
    "sriov_numvfs",
    "physfn",
)
# The mlx4 driver's PCI table (drivers/net/ethernet/mellanox/mlx4/main.c).
MODELS = {
    "0x1003": "ConnectX-3",
    "0x1007": "ConnectX-3 Pro",
    "0x1004": "ConnectX-3 Virtual Function",
    "0x1002": "ConnectX-2 Virtual Function",
    **{f"0x{d:04x}": "other ConnectX (ConnectX-3 family, MT275xx)" for d in range(0x1005, 0x1011) if d != 0x1007},
    **{
        f"0x{d:04x}": "other ConnectX (ConnectX or ConnectX-2)"
        for d in (0x6340, 0x634A, 0x6354, 0x6732, 0x673C, 0x6368, 0x6750, 0x6372, 0x675A, 0x6764, 0x6746, 0x676E)
    },
}
VF_IDS = frozenset({"0x1004", "0x1002"})
SUBSYSTEMS = {
    ("0x103c", "0x22f5"): "HP InfiniBand FDR/Ethernet 10Gb/40Gb 2-port 544+FLR-QSFP Adapter",
    ("0x103c", "0x22f6"): "HP InfiniBand FDR/Ethernet 10Gb/40Gb 2-port 544+QSFP Adapter",
    ("0x103c", "0x1777"): "HP InfiniBand FDR/EN 10/40Gb Dual Port 544FLR-QSFP Adapter",
    ("0x15b3", "0x0051"): "Mellanox ConnectX-3 EN 10GbE SFP+ (MCX312A)",
    ("0x15b3", "0x0055"): "Mellanox ConnectX-3 VPI (MCX354A-FCBT)",
    ("0x15b3", "0x0061"): "Mellanox ConnectX-3 Pro EN 10GbE (MCX312B)",
    ("0x15b3", "0x0006"): "Mellanox ConnectX-3 Pro VPI (MCX354A-FCCT)",
}
STATUS_ORDER = ("affected", "affected-dcs", "pending-reboot", "other-failure", "healthy", "no-device")

_ADDRESS = re.compile(r"\b[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\b")
_INTERESTING = re.compile(
    r"Missing (?:UAR|DCS)|Automatically enabled pci realloc|BAR ?\d+|not enough MMIO|SR-IOV|mlx4_core|mlx4_en|"
    r"failed to assign|no space for|can't assign"
)
_BOOT = re.compile(r"Linux version \d")
# A line's prefix: a syslog priority (<3>), a syslog or RFC 3339 time and "host kernel:", a [stamp] (dmesg,
# dmesg -T, journalctl -o short-monotonic) and after it, for the journal, "host kernel:".
_STAMP = re.compile(
    r"^(?:<\d{1,3}>)?(?:(\w{3} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT[\d:.+-]+) \S+ kernel: ?)?"
    r"(\[\s*\d+\.\d+\]|\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\])?(?: ?\S+ kernel:)? ?"
)


class Bar(NamedTuple):
    number: int
    start: int
    end: int
    flags: int

    @property
    def assigned(self) -> bool:
        """A BAR the kernel gave memory to: IORESOURCE_MEM set, a start address, not UNSET."""
        return bool(self.flags & IORESOURCE_MEM) and self.start != 0 and not self.flags & IORESOURCE_UNSET

    def describe(self) -> str:
        if self.assigned:
            return f"[mem {self.start:#x}-{self.end:#x}] ({(self.end - self.start + 1) // 1024} KiB)"
        if self.flags == 0 and self.start == 0 and self.end == 0:
            return "not assigned (start, end and flags all zero)"
        why = "no memory resource flag" if not self.flags & IORESOURCE_MEM else "start 0" if self.start == 0 else "UNSET"
        return f"not assigned ({why}: {self.start:#x}-{self.end:#x} flags {self.flags:#x})"


class LogLine(NamedTuple):
    stamp: str  # "[    2.365098]" or the syslog time, "" when the line has none
    text: str  # the message after the prefix
    kind: str  # missing-uar, missing-dcs, auto-realloc, bar-failure, sriov, mlx4
    address: str | None
    repeats: int = 1  # the same message, logged again in this boot (a driver retrying): shown once

    @property
    def shown(self) -> str:
        return self.text + (f" (logged {self.repeats} times)" if self.repeats > 1 else "")


class Device(NamedTuple):
    address: str
    device_id: str
    model: str
    subsystem: str
    driver: str | None
    driver_override: str | None
    interfaces: tuple[str, ...]
    is_vf: bool
    sriov_totalvfs: int | None
    bar0: Bar | None
    bar2: Bar | None
    status: str
    evidence: tuple[str, ...]
    log: tuple[LogLine, ...]
    has_physfn: bool = False  # a VF whose physical function is on this host (not one passed into a VM)

    @property
    def bar0_assigned(self) -> bool | None:
        return self.bar0.assigned if self.bar0 is not None else None

    @property
    def bar2_assigned(self) -> bool | None:
        return self.bar2.assigned if self.bar2 is not None else None


class Context(NamedTuple):
    virtual: str | None  # "kvm", "qemu", "vmware", ... or None on bare metal
    virtual_evidence: str
    proxmox: str | None
    uefi: bool
    board: str
    bios: str


class Diagnosis(NamedTuple):
    status: str
    devices: tuple[Device, ...]
    modules: dict[str, bool]
    running: str | None  # /proc/cmdline
    running_realloc: str | None  # "on", "off" or None (not set)
    configured: str | None  # the command line the boot configuration gives next boot
    configured_realloc: str | None
    configured_source: str
    log_source: str
    log: tuple[LogLine, ...]  # host-wide lines (auto realloc, BAR failures of bridges)
    context: Context
    advice: tuple[str, ...]
    warnings: tuple[str, ...]
    log_read: bool = True  # False: no kernel log of this boot could be read
    boot_setup: tuple[str, str, tuple[str, ...]] | None = None  # name, title, evidence (None: not detected)
    boot_setup_error: str = ""  # why no boot setup was detected
    log_all: tuple[LogLine, ...] = ()  # every line of this boot's log that matters, the devices' too
    trial: bool = False  # this boot is a trial boot (apply --trial): the default boot does not have the fix


# -- reading the facts ----------------------------------------------------------------------------------


SYSFS_LIMIT = 1 << 20  # no sysfs attribute, /proc/cmdline or /proc/modules of a real host comes near this


def _text(snap: Snapshot, path: str, warnings: list[str] | None = None) -> str | None:
    """A small kernel file as text; a binary or oversized one is ignored, with a warning naming it."""
    data = snap.data(path)
    if data is None:
        return None
    problem = (
        "it holds NUL bytes (binary)"
        if b"\0" in data
        else f"it is larger than {SYSFS_LIMIT} bytes"
        if len(data) > SYSFS_LIMIT
        else ""
    )
    if problem:
        if warnings is not None:
            warnings.append(f"{path}: ignored: {problem}")
        return None
    return data.decode("utf-8", "replace").strip()


def parse_resource(text: str) -> tuple[list[Bar], str | None]:
    """The BARs of a sysfs ``resource`` file (``start end flags`` in hex, one line per resource), and
    a problem description when the file is malformed or truncated."""
    bars: list[Bar] = []
    for i, line in enumerate(text.splitlines()):
        fields = line.split()
        if len(fields) != 3:
            return bars, f"line {i + 1} has {len(fields)} fields, not 3"
        try:
            start, end, flags = (int(f, 16) for f in fields)
        except ValueError:
            return bars, f"line {i + 1} is not hexadecimal: {line.strip()[:60]!r}"
        bars.append(Bar(i, start, end, flags))
    if len(bars) < 13 and len(bars) != 7:  # 7 from a kernel without SR-IOV support (no VF BARs)
        return bars, f"only {len(bars)} lines (a PCI device has 13: BAR 0-5, ROM, 6 VF BARs; 7 without SR-IOV support)"
    return bars, None


def scan_log(text: str) -> tuple[list[LogLine], str]:
    """The lines of this boot's kernel log that matter here; a log that spans several boots (kern.log)
    is cut at the last kernel banner. Linear in the size of the log."""
    note = ""
    last = None
    for m in _BOOT.finditer(text):
        last = m
    if last is not None and last.start() > 0:
        start = text.rfind("\n", 0, last.start()) + 1
        if start > 0:
            note = "older boots in the file skipped"
        text = text[start:]
    found: list[LogLine] = []
    index: dict[tuple[str, str], int] = {}  # (kind, message) -> its place in found
    done = -1  # the start of the last line taken: a line with several matches is taken once
    begin = scanned = 0  # the start of the current line; how far back newlines were looked for
    for m in _INTERESTING.finditer(text):
        newline = text.rfind("\n", scanned, m.start())  # only what the previous match did not cover:
        if newline >= 0:  # a long line of many matches is not searched back again for each
            begin = newline + 1
        scanned = m.start()
        if begin == done:
            continue
        done = begin
        end = text.find("\n", m.end())
        line = _log_line(text[begin : end if end >= 0 else len(text)].rstrip("\r"))
        at = index.get((line.kind, line.text))
        if at is None:
            index[line.kind, line.text] = len(found)
            found.append(line)
        else:
            found[at] = found[at]._replace(repeats=found[at].repeats + 1)
    return found, note


def _log_line(line: str) -> LogLine:
    m = _STAMP.match(line)
    stamp = ""
    rest = line
    if m is not None and m.group(0):
        stamp = (m.group(2) or m.group(1) or "").strip()
        rest = line[m.end() :].strip()
    lowered = rest
    if "Missing UAR" in lowered:
        kind = "missing-uar"
    elif "Missing DCS" in lowered:
        kind = "missing-dcs"
    elif "Automatically enabled pci realloc" in lowered:
        kind = "auto-realloc"
    elif re.search(r"no space for|failed to assign|can't assign", lowered):
        kind = "bar-failure"
    elif "SR-IOV" in lowered or "not enough MMIO" in lowered:
        kind = "sriov"
    else:
        kind = "mlx4" if "mlx4" in lowered else "pci"
    addr = _ADDRESS.search(rest)
    return LogLine(stamp, rest, kind, addr.group(0) if addr else None)


def device_request(snap: Snapshot) -> tuple[list[str], list[str]]:
    """The files and listings to read for every Mellanox function found in the first pass."""
    files: list[str] = []
    listings: list[str] = []
    for path in snap.globs.get(f"{PCI}/*/vendor", []):
        if (_text(snap, path) or "").lower() == MELLANOX:
            base = path.rsplit("/", 1)[0]
            files += [f"{base}/{name}" for name in DEVICE_FILES]
            listings += [f"{base}/net", f"{base}/infiniband"]
    return files, listings


def _device(snap: Snapshot, base: str, log: list[LogLine], warnings: list[str]) -> Device | None:
    address = base.rsplit("/", 1)[1]
    raw_id = _text(snap, f"{base}/device", warnings)
    device_id = (raw_id or "").lower()
    mine = tuple(ln for ln in log if ln.address == address)
    if device_id not in MODELS:
        if re.fullmatch(r"0x[0-9a-f]{4}", device_id):
            return None  # a Mellanox device mlx4 does not drive (ConnectX-4 and later: mlx5)
        info = snap.files.get(f"{base}/device")
        why = (info.error if info is not None else None) or ("missing" if raw_id is None else f"not a device id: {raw_id[:40]!r}")
        warnings.append(f"{base}/device: {why}; {address} is a Mellanox device of unknown model, judged as an mlx4 one")
        model = "Mellanox device (model unknown: its device id is unreadable)"
        device_id = "0x????"
    else:
        model = MODELS[device_id]
    sv = (_text(snap, f"{base}/subsystem_vendor", warnings) or "").lower()
    sd = (_text(snap, f"{base}/subsystem_device", warnings) or "").lower()
    subsystem = SUBSYSTEMS.get((sv, sd), f"{sv[2:]}:{sd[2:]}" if sv and sd else "unknown")
    link = snap.files.get(f"{base}/driver")
    driver = link.link_target.rsplit("/", 1)[-1] if link is not None and link.link_target else None
    if link is not None and link.exists and not link.is_symlink:
        warnings.append(f"{base}/driver: not a symlink (sysfs makes it one); {address} counts as bound to no driver")
    override = _text(snap, f"{base}/driver_override", warnings)
    override = None if override in (None, "", "(null)") else override
    interfaces = tuple((snap.listings.get(f"{base}/net") or []) + (snap.listings.get(f"{base}/infiniband") or []))
    physfn = snap.files.get(f"{base}/physfn")
    has_physfn = physfn is not None and physfn.link_target is not None
    is_vf = device_id in VF_IDS or has_physfn
    total = _text(snap, f"{base}/sriov_totalvfs", warnings)
    total_vfs = int(total) if total and total.isdigit() else None
    if total and total_vfs is None:
        warnings.append(f"{base}/sriov_totalvfs: not a number: {total[:40]!r}; ignored")
    bar0 = bar2 = None
    resource = _text(snap, f"{base}/resource", warnings)
    if resource is None:
        info = snap.files.get(f"{base}/resource")
        why = info.error if info is not None and info.error else "missing" if info is None or not info.exists else "unreadable"
        warnings.append(f"{base}/resource: {why}; the BARs of {address} are unknown")
    else:
        bars, problem = parse_resource(resource)
        if problem:
            warnings.append(f"{base}/resource: {problem}; using what could be read")
        bar0 = bars[0] if len(bars) > 0 else None
        bar2 = bars[2] if len(bars) > 2 else None
    facts = _Facts(address, driver, override, interfaces, is_vf, has_physfn, total_vfs, bar0, bar2, mine)
    status, evidence = _verdict(facts)
    return Device(
        address, device_id, model, subsystem, driver, override, interfaces, is_vf, total_vfs, bar0, bar2, status, evidence, mine,
        has_physfn,
    )  # fmt: skip


class _Facts(NamedTuple):
    address: str
    driver: str | None
    override: str | None
    interfaces: tuple[str, ...]
    is_vf: bool
    has_physfn: bool
    total_vfs: int | None
    bar0: Bar | None
    bar2: Bar | None
    log: tuple[LogLine, ...]


def _verdict(f: _Facts) -> tuple[str, tuple[str, ...]]:
    """One device's status and the evidence for it (pending-reboot is decided for the host)."""
    driver, bar0, bar2 = f.driver, f.bar0, f.bar2
    ev: list[str] = []
    ev.append(f"driver: {driver or 'none (unbound)'}" + (f", driver_override={f.override}" if f.override else ""))
    if bar0 is not None:
        ev.append(f"BAR 0 (DCS): {bar0.describe()}")
    if bar2 is not None:
        ev.append(f"BAR 2 (UAR): {bar2.describe()}")
    if bar0 is None and bar2 is None:
        ev.append("BARs: unknown (the resource file could not be read)")
    if f.interfaces:
        ev.append(f"interfaces: {', '.join(f.interfaces)}")
    if f.total_vfs is not None:
        ev.append(f"SR-IOV: up to {f.total_vfs} virtual functions (sriov_totalvfs)")
    uar_logged = any(ln.kind == "missing-uar" for ln in f.log)
    dcs_logged = any(ln.kind == "missing-dcs" for ln in f.log)
    for ln in f.log:
        if ln.kind in ("missing-uar", "missing-dcs", "bar-failure", "sriov"):
            ev.append(f"log {ln.stamp}: {ln.shown}".replace("log : ", "log: "))
    bar0_missing = (bar0 is not None and not bar0.assigned) or (bar0 is None and dcs_logged)
    bar2_missing = (bar2 is not None and not bar2.assigned) or (bar2 is None and uar_logged)
    if not f.is_vf and bar0_missing and driver != "mlx4_core":  # mlx4 checks DCS on physical functions only
        return "affected-dcs", tuple(ev)
    if bar2_missing and driver != "mlx4_core":
        return "affected", tuple(ev)
    if bar2 is not None and bar2.assigned and (uar_logged or dcs_logged):
        ev.append("the log says Missing UAR/DCS, yet the BAR is assigned now (a rescan since, or a log of another boot?)")
    if driver == "mlx4_core":
        if f.interfaces:
            return "healthy", tuple(ev)
        ev.append("mlx4_core is bound but the device has no network or InfiniBand interface (is mlx4_en/mlx4_ib loaded?)")
        return "other-failure", tuple(ev)
    if driver == "vfio-pci":
        if bar2 is not None and bar2.assigned:
            ev.append("bound to vfio-pci for passthrough, with BAR 2 assigned")
            return "healthy", tuple(ev)
        ev.append(f"{f.address} is bound to vfio-pci but its BARs are unknown: cannot tell whether this is the bug")
        return "other-failure", tuple(ev)
    if driver is None and f.has_physfn and not bar2_missing:
        ev.append("a virtual function not in use on this host (no driver): normal until it is given to a VM")
        return "healthy", tuple(ev)
    if bar2 is None:
        ev.append(f"{f.address} is not bound to mlx4_core and its BARs are unknown: cannot tell whether this is the bug")
    elif driver is None:
        ev.append(f"{f.address} is not bound to any driver although BAR 2 is assigned: not this bug")
    else:
        ev.append(f"{f.address} is bound to {driver}, not mlx4_core: not this bug")
    return "other-failure", tuple(ev)


def _dmi(snap: Snapshot, *names: str) -> str:
    return " ".join(filter(None, (_text(snap, f"/sys/class/dmi/id/{n}") for n in names)))


def host_context(snap: Snapshot) -> Context:
    from mlxfix.virt import detect_vm

    virtual, why = detect_vm(snap, _dmi(snap, "sys_vendor", "product_name"))
    proxmox = None
    pveversion = snap.outputs.get("pveversion", "").strip()
    if pveversion:
        proxmox = pveversion.splitlines()[0]
    elif snap.listings.get("/etc/pve") is not None:
        proxmox = "Proxmox VE (/etc/pve)"
    elif snap.tools.get("pveversion"):  # under --root: installed, not run
        proxmox = "Proxmox VE (pveversion is installed)"
    board = _dmi(snap, "board_vendor", "board_name") or "unknown"
    bios = _dmi(snap, "bios_version", "bios_date") or "unknown"
    return Context(virtual, why, proxmox, snap.listings.get("/sys/firmware/efi") is not None, board, bios)


def _modules(snap: Snapshot, warnings: list[str]) -> dict[str, bool]:
    text = _text(snap, "/proc/modules", warnings)
    if text is None:
        warnings.append("/proc/modules could not be read; module checks are skipped")
        return dict.fromkeys(MODULES, False)
    loaded = {line.split(" ", 1)[0] for line in text.splitlines() if line.strip()}
    return {m: m in loaded for m in MODULES}


def analyse(snap: Snapshot, configured: str | None, configured_source: str, log_text: str | None, log_source: str) -> Diagnosis:
    """The verdict for the host and for each Mellanox function, with the evidence and the advice."""
    warnings: list[str] = []
    log, note = scan_log(log_text) if log_text is not None else ([], "")
    if note:
        log_source += f" ({note})"
    if log_text is None:
        warnings.append(f"no kernel log could be read ({log_source}); the verdict rests on sysfs alone")
    if snap.listings.get(PCI) is None and not snap.globs.get(f"{PCI}/*/vendor"):
        warnings.append(f"{PCI} could not be listed: no PCI device information")
    devices = []
    vendor_files = snap.globs.get(f"{PCI}/*/vendor", [])
    warnings += _without_vendor(snap, vendor_files)
    for path in vendor_files:
        vendor = _text(snap, path, warnings)
        if vendor is None or not _VENDOR_ID.fullmatch(vendor):
            info = snap.files.get(path)
            if vendor is not None:
                warnings.append(f"{path}: not a vendor id: {vendor[:40]!r}; {_UNIDENTIFIED}")
            elif info is not None and info.data is None:  # (one that holds bytes _text ignored is named by it)
                warnings.append(f"{path}: {'a directory' if info.is_dir else info.error or 'unreadable'}; {_UNIDENTIFIED}")
            continue
        if vendor.lower() == MELLANOX:
            dev = _device(snap, path.rsplit("/", 1)[0], log, warnings)
            if dev is not None:
                devices.append(dev)
    modules = _modules(snap, warnings)
    running = _text(snap, "/proc/cmdline", warnings)
    if running is None:
        warnings.append("/proc/cmdline could not be read")
    running_realloc, running_ignored = cmdline.realloc_setting(running) if running is not None else (None, [])
    configured_realloc, configured_ignored = cmdline.realloc_setting(configured) if configured is not None else (None, [])
    for where, ignored in (("/proc/cmdline", running_ignored), (configured_source, configured_ignored)):
        if ignored:
            options = ", ".join(f"pci={o}" for o in ignored)
            warnings.append(f"{where}: the kernel ignores {options} (only values starting with on or off count)")
    if running_realloc == "off" and configured is not None and configured_realloc != "off":
        warnings.append(f"the running kernel has pci=realloc=off, but {configured_source} does not: the next boot loses it")
    stale = _log_of_another_boot(log_text, running)
    if stale:
        warnings.append(f"{log_source}: {stale}")
    pending = configured_realloc == "off" and running_realloc != "off"
    devices = [d._replace(status="pending-reboot") if pending and d.status.startswith("affected") else d for d in devices]
    status = min((d.status for d in devices), key=STATUS_ORDER.index) if devices else "no-device"
    addresses = {d.address for d in devices}
    host_log = tuple(
        ln
        for ln in log
        if ln.kind == "auto-realloc"
        or (ln.kind in ("bar-failure", "sriov", "missing-uar", "missing-dcs") and ln.address not in addresses)
    )
    if not devices and any(ln.kind in ("missing-uar", "missing-dcs") for ln in host_log):
        warnings.append("the kernel log reports Missing UAR/DCS for a device mlxfix cannot see in sysfs")
    context = host_context(snap)
    diagnosis = Diagnosis(
        status, tuple(devices), modules, running, running_realloc, configured, configured_realloc, configured_source,
        log_source, host_log, context, (), tuple(warnings), log_read=log_text is not None,
    )  # fmt: skip
    diagnosis = diagnosis._replace(log_all=tuple(log))
    return diagnosis._replace(advice=advise(diagnosis))


_LOGGED_CMDLINE = re.compile(r"[Cc]ommand line: (.*)")


_VENDOR_ID = re.compile(r"0x[0-9a-fA-F]{4}")
_UNIDENTIFIED = "that device cannot be identified (it may be a Mellanox one)"


def _without_vendor(snap: Snapshot, vendor_files: list[str]) -> list[str]:
    """Warnings for the PCI devices that have no vendor file at all: one of them may be the NIC."""
    have = {p.rsplit("/", 2)[-2] for p in vendor_files}
    return [f"{PCI}/{name}/vendor: missing; {_UNIDENTIFIED}" for name in snap.listings.get(PCI) or [] if name not in have]


def logged_cmdline(log_text: str) -> str | None:
    """The command line of the last boot in a log file, as the kernel logged it early in that boot
    (looked for right after the last banner: a log of 200,000 lines is not scanned again)."""
    banner = log_text.rfind("Linux version ")
    head = log_text[max(banner, 0) : max(banner, 0) + (64 << 10)]
    found = _LOGGED_CMDLINE.search(head)
    return found.group(1).strip() if found is not None else None


def _other_cmdline(log_text: str | None, running: str | None) -> str | None:
    """The command line a log file's last boot logged, when it is not /proc/cmdline (None: the same,
    or unknown). A log file (kern.log) may end before this boot: that line says which boot it is."""
    if not log_text or running is None:
        return None
    logged = logged_cmdline(log_text)
    if logged is None or logged.split() == running.split() or running.split() == logged.split()[: len(running.split())]:
        return None
    return logged


def _log_of_another_boot(log_text: str | None, running: str | None) -> str:
    if _other_cmdline(log_text, running) is None:
        return ""
    return "its last boot ran with another command line than /proc/cmdline: it may be the log of an earlier boot"


def log_of_an_earlier_boot(log_text: str, running: str | None) -> str:
    """Why a log file is not this boot's, when it provably is not: its last boot ran with another
    pci=realloc setting than /proc/cmdline (its Missing UAR says nothing of this boot). "" otherwise."""
    logged = _other_cmdline(log_text, running)
    if logged is None or running is None:
        return ""
    then, now = cmdline.realloc_setting(logged)[0], cmdline.realloc_setting(running)[0]
    if then == now:
        return ""
    return (
        f"the log of an earlier boot (it ran with pci=realloc {then or 'unset'}, this one runs with"
        f" {now or 'it unset'}), not used"
    )


_VM_ADVICE = (
    "This is a VM: the fix belongs on the hypervisor host's kernel command line when the host's BAR 2 is missing "
    "(QEMU hides SR-IOV from guests). Run mlxfix diagnose on the host, and mlxfix apply there."
)


def advise(d: Diagnosis) -> tuple[str, ...]:
    """What to do next; printed, never done automatically. (Also once the boot setup is known: where
    mlxfix cannot edit it, the next command is not mlxfix apply.)"""
    return tuple(_advice(d))


def _advice(d: Diagnosis) -> list[str]:
    out: list[str] = []
    affected = [x for x in d.devices if x.status.startswith("affected") or x.status == "pending-reboot"]
    if d.status == "no-device":
        out.append("No Mellanox ConnectX-3 (mlx4) device is visible: nothing to fix here.")
        if d.context.virtual:
            out.append("In a VM, check that the NIC or its VF is passed through (hostpci in Proxmox).")
        return out
    if d.status == "pending-reboot":
        out.append(f"The fix is configured ({d.configured_source}) but the running kernel does not have it.")
        out.append("Reboot, then run: mlxfix verify")
        if d.context.virtual:
            out.append(_VM_ADVICE)
        return out
    if any(ln.kind == "auto-realloc" for ln in d.log_all):
        out.append("The kernel enabled pci realloc by itself (CONFIG_PCI_REALLOC_ENABLE_AUTO): pci=realloc=off stops that.")
    if affected and d.context.virtual:
        out.append(_VM_ADVICE)
    elif affected and d.running_realloc != "off":
        if d.boot_setup is None and d.boot_setup_error:
            out.append(f"mlxfix cannot add the parameter on this host: {d.boot_setup_error}")
        else:
            out.append("Next: mlxfix apply --dry-run (review the diff), then mlxfix apply, reboot, mlxfix verify.")
        if "Z87-A" in d.context.board:
            out.append(f"On this board ({d.context.board}) ASPM also had to be enabled in the BIOS in the reported case.")
    elif affected:
        board = d.context.board
        bars = "BAR 0" if all(x.status == "affected-dcs" for x in affected) else "BAR 2"
        out.append(f"pci=realloc=off is already in effect and {bars} is still missing. Try, in this order:")
        aspm = "enable ASPM in the BIOS (reported necessary on an ASUS Z87-A)"
        if "Z87-A" in board:
            aspm += f": this board ({board}) is one of them"
        out.append(f"  - {aspm};")
        out.append("  - enable Above 4G Decoding (and, if offered, SR-IOV) in the BIOS;")
        first = affected[0].address
        out.append(
            f"  - disable SR-IOV in the NIC firmware: mstconfig -d {first} set SRIOV_EN=0 (or mlxconfig), then power-cycle;"
        )
        out.append("  - update the NIC firmware (mstflint) and the BIOS.")
    for x in d.devices:
        if x.status == "other-failure":
            out.append(f"{x.address}: not the Missing UAR bug; {x.evidence[-1]}.")
    if d.status == "healthy":
        out.append("The Mellanox devices work; nothing to do.")
    return out


# -- verify -----------------------------------------------------------------------------------------------


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str


class Verification(NamedTuple):
    ok: bool
    checks: tuple[Check, ...]
    diagnosis: Diagnosis


def _unused_vf(x: Device) -> bool:
    """A virtual function on its own host with no driver: not in use, which is normal."""
    return x.is_vf and x.driver is None and x.has_physfn


def verify(d: Diagnosis, param: cmdline.Param, *, present: bool = True) -> Verification:
    """After the reboot: every check must hold. ``present=False`` (after a rollback): the parameter
    must no longer be in effect; the devices are not judged then."""
    checks: list[Check] = []
    running = d.running or ""
    holds = d.running is not None and cmdline.in_effect(running, param)
    if d.running is None:
        detail = "/proc/cmdline could not be read"
    elif present:
        detail = f"/proc/cmdline {'has' if holds else 'lacks'} {param.text}"
    else:
        detail = f"/proc/cmdline {'still has' if holds else 'no longer has'} {param.text}"
    checks.append(Check("cmdline", d.running is not None and holds == present, detail))
    if not present:
        return Verification(all(c.ok for c in checks), tuple(checks), d)
    if not d.devices:
        checks.append(Check("devices", False, "no Mellanox ConnectX-3 (mlx4) device found"))
        return Verification(False, tuple(checks), d)
    used = [x for x in d.devices if not _unused_vf(x)]
    by_design = [x for x in used if x.driver == "vfio-pci" or x.driver_override == "vfio-pci"]
    for x in used:
        bound = x.driver == "mlx4_core" or (x.driver == "vfio-pci" and x in by_design)
        driver = f"bound to {x.driver}" if x.driver else "bound to no driver"
        checks.append(Check(f"{x.address} driver", bound, driver + (" (passthrough)" if x in by_design else "")))
        if not x.is_vf:
            checks.append(
                Check(
                    f"{x.address} BAR 0",
                    x.bar0_assigned is True,
                    x.bar0.describe() if x.bar0 else "unknown (resource unreadable)",
                )
            )
        checks.append(
            Check(f"{x.address} BAR 2", x.bar2_assigned is True, x.bar2.describe() if x.bar2 else "unknown (resource unreadable)")
        )
        if x.driver == "mlx4_core":
            checks.append(Check(f"{x.address} interfaces", bool(x.interfaces), ", ".join(x.interfaces) or "none"))
    if len(by_design) < len(used):
        loaded = d.modules.get("mlx4_en") or d.modules.get("mlx4_ib")
        which = ", ".join(m for m in ("mlx4_en", "mlx4_ib") if d.modules.get(m)) or "neither mlx4_en nor mlx4_ib"
        checks.append(Check("modules", bool(loaded), f"loaded: {which}"))
    lines = [*d.log, *(ln for x in d.devices for ln in x.log)]
    missing = sorted({ln.address or "an unnamed device" for ln in lines if ln.kind in ("missing-uar", "missing-dcs")})
    if not d.log_read:
        checks.append(
            Check("log", False, f"this boot's kernel log could not be read ({d.log_source}): cannot rule out Missing UAR")
        )
    else:
        detail = (
            f"this boot's log says Missing UAR/DCS for {', '.join(missing)}" if missing else "no Missing UAR in this boot's log"
        )
        checks.append(Check("log", not missing, detail))
    return Verification(all(c.ok for c in checks), tuple(checks), d)
