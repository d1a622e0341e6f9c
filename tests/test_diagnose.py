"""diagnose and verify: every verdict, every advice branch, and broken inputs that must never crash."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxfix.diagnose import Bar, parse_resource, scan_log
from mlxfix.models import DiagnoseResult, VerifyResult
from tests.conftest import EXAMPLES
from tests.trees import EMPTY_BAR, cx3_resource, debian_host, invoke, json_of, kernel_log, pci_device, proc, run, write

if TYPE_CHECKING:
    from pathlib import Path

UAR_LOG = "[    0.000000] Linux version 6.8.12-4-pve\n[    2.365098] mlx4_core 0000:01:00.0: Missing UAR, aborting\n"


def diagnose(root: Path) -> tuple[int, dict[str, object]]:
    code, out, _ = invoke("diagnose", "--json", "--root", str(root))
    doc = json_of(out)
    DiagnoseResult.model_validate(doc)
    return code, doc


def device(doc: dict[str, object], address: str = "0000:01:00.0") -> dict[str, object]:
    devices = doc["devices"]
    assert isinstance(devices, list)
    return next(d for d in devices if d["address"] == address)


# -- the shipped examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "status", "code"),
    [
        ("pve-missing-uar", "affected", 10),
        ("pve-pending-reboot", "pending-reboot", 11),
        ("pve-fixed", "healthy", 0),
        ("debian-healthy", "healthy", 0),
        ("vm-passthrough-vf", "affected", 10),
        ("no-mellanox", "no-device", 0),
    ],
)
def test_example_trees(tree: str, status: str, code: int) -> None:
    got, doc = diagnose(EXAMPLES / tree)
    assert doc["status"] == status
    assert got == code
    assert doc["exit_code"] == code


def test_the_story_host_in_detail() -> None:
    _, doc = diagnose(EXAMPLES / "pve-missing-uar")
    assert sorted(doc) == sorted(
        ["version", "mlxfix_version", "command", "host", "root", "status", "devices", "modules", "cmdline", "boot_setup", "boot_setup_error", "kernel_log",
         "context", "advice", "warnings", "errors", "exit_code", "ssh"]
    )  # fmt: skip
    for address in ("0000:01:00.0", "0000:02:00.0"):
        dev = device(doc, address)
        assert dev["model"] == "ConnectX-3 Pro"
        assert "544+FLR-QSFP" in str(dev["subsystem"])
        assert dev["driver"] == "vfio-pci"
        assert dev["bar0_assigned"] is True
        assert dev["bar2_assigned"] is False
        assert dev["status"] == "affected"
        assert any("Missing UAR" in e for e in dev["evidence"])  # type: ignore[union-attr]
    assert doc["modules"] == {"mlx4_core": True, "mlx4_en": False, "mlx4_ib": False, "vfio_pci": True}
    assert any("Automatically enabled pci realloc" in ln["text"] for ln in doc["kernel_log"]["lines"])  # type: ignore[index]
    advice = " ".join(doc["advice"])  # type: ignore[arg-type]
    assert "mlxfix apply --dry-run" in advice
    assert "ASPM" in advice  # ASUS Z87-A
    assert doc["context"]["board"] == "ASUSTeK COMPUTER INC. Z87-A"  # type: ignore[index]


def test_human_output_puts_the_verdict_first_and_advice_last() -> None:
    proc_ = run("diagnose", "--root", str(EXAMPLES / "pve-missing-uar"))
    assert proc_.returncode == 10
    lines = proc_.stdout.splitlines()
    assert lines[0].startswith("AFFECTED")
    assert "[    2.365098]" in proc_.stdout  # log lines with their timestamps
    assert proc_.stdout.index("0000:01:00.0") < proc_.stdout.index("Advice")


def test_verify_passes_on_the_fixed_host_and_names_failures_elsewhere() -> None:
    code, out, _ = invoke("verify", "--json", "--root", str(EXAMPLES / "pve-fixed"))
    assert code == 0
    doc = VerifyResult.model_validate_json(out)
    assert doc.ok
    assert not doc.failed
    code, out, _ = invoke("verify", "--json", "--root", str(EXAMPLES / "pve-missing-uar"))
    assert code == 13
    doc = VerifyResult.model_validate_json(out)
    assert "cmdline" in doc.failed
    assert "0000:01:00.0 BAR 2" in doc.failed
    assert "log" in doc.failed
    code, out, _ = invoke("verify", "--root", str(EXAMPLES / "no-mellanox"))
    assert code == 13
    assert "no Mellanox" in out


# -- verdicts on built trees ------------------------------------------------------------------------------


def host(tmp_path: Path, **proc_args: object) -> Path:
    root = debian_host(tmp_path / "root")
    proc(root, **proc_args)  # type: ignore[arg-type]
    write(root, "/sys/bus/pci/devices/0000:00:00.0/vendor", "0x8086\n")
    return root


@pytest.mark.parametrize(
    ("driver", "resource", "net", "log", "status"),
    [
        (None, cx3_resource(bar2=None), (), UAR_LOG, "affected"),
        ("vfio-pci", cx3_resource(bar2=None), (), "", "affected"),
        (None, cx3_resource(bar0=None, bar2=None), (), "", "affected-dcs"),
        (None, cx3_resource(bar2_line="0x0000000000000000 0x0000000001ffffff 0x000000002014220c"), (), "", "affected"),  # UNSET
        (
            None,
            cx3_resource(bar2_line="0x00000000f0000000 0x00000000f1ffffff 0x0000000000000000"),
            (),
            "",
            "affected",
        ),  # no MEM flag
        ("mlx4_core", cx3_resource(), ("enp1s0",), "", "healthy"),
        ("vfio-pci", cx3_resource(), (), "", "healthy"),
        (None, cx3_resource(), (), "", "other-failure"),
        ("mlx4_core", cx3_resource(), (), "", "other-failure"),
        ("ixgbe", cx3_resource(), (), "", "other-failure"),
    ],
)
def test_device_verdicts(tmp_path: Path, driver: str | None, resource: str, net: tuple[str, ...], log: str, status: str) -> None:
    root = host(tmp_path)
    pci_device(root, driver=driver, resource=resource, net=net)
    if log:
        kernel_log(root, log)
    code, doc = diagnose(root)
    assert device(doc)["status"] == status
    assert doc["status"] == status
    assert code == {"affected": 10, "affected-dcs": 10, "pending-reboot": 11, "other-failure": 12, "healthy": 0}[status]
    if status == "other-failure":
        assert "not this bug" in " ".join(doc["advice"]) or "no network" in " ".join(doc["advice"])  # type: ignore[arg-type]


def test_pending_reboot_when_configured_but_not_running(tmp_path: Path) -> None:
    root = host(tmp_path)
    write(root, "/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\n')
    pci_device(root, driver=None, resource=cx3_resource(bar2=None))
    code, doc = diagnose(root)
    assert (code, doc["status"]) == (11, "pending-reboot")
    assert doc["cmdline"]["configured_realloc"] == "off"  # type: ignore[index]
    assert doc["cmdline"]["running_realloc"] is None  # type: ignore[index]
    assert "reboot" in " ".join(doc["advice"]).lower()  # type: ignore[arg-type]


def test_affected_although_realloc_off_is_running_gives_bios_and_firmware_advice(tmp_path: Path) -> None:
    root = host(tmp_path, cmdline="root=/dev/sda1 ro quiet pci=noaer,realloc=off")
    write(root, "/sys/class/dmi/id/board_vendor", "ASUSTeK COMPUTER INC.\n")
    write(root, "/sys/class/dmi/id/board_name", "Z87-A\n")
    pci_device(root, driver=None, resource=cx3_resource(bar2=None))
    code, doc = diagnose(root)
    assert code == 10
    advice = " ".join(doc["advice"])  # type: ignore[arg-type]
    assert "ASPM" in advice
    assert "this board" in advice
    assert "Above 4G" in advice
    assert "mstconfig -d 0000:01:00.0 set SRIOV_EN=0" in advice
    assert "firmware" in advice
    assert "mlxfix apply" not in advice  # the fix is already in effect


def test_a_vm_is_told_that_the_fix_belongs_on_the_host(tmp_path: Path) -> None:
    root = host(tmp_path, cpu_flags="fpu hypervisor sse2")
    pci_device(root, device="0x1004", driver=None, resource=cx3_resource(bar0=None, bar2=None))
    code, doc = diagnose(root)
    assert code == 10
    assert device(doc)["status"] == "affected"  # a VF has no DCS check: BAR 0 is not its problem
    assert doc["context"]["virtual"] == "vm"  # type: ignore[index]
    assert "hypervisor host" in " ".join(doc["advice"])  # type: ignore[arg-type]


def test_auto_realloc_in_the_log_is_explained(tmp_path: Path) -> None:
    root = host(tmp_path)
    pci_device(root, driver=None, resource=cx3_resource(bar2=None))
    kernel_log(
        root,
        "pve kernel: [ 0.35] pci_bus 0000:00: Automatically enabled pci realloc, if you have problem, try booting with pci=realloc=off\n",
        "/var/log/kern.log",
    )
    _, doc = diagnose(root)
    assert "CONFIG_PCI_REALLOC_ENABLE_AUTO" in " ".join(doc["advice"])  # type: ignore[arg-type]


def test_no_device(tmp_path: Path) -> None:
    root = host(tmp_path)
    code, doc = diagnose(root)
    assert (code, doc["status"], doc["devices"]) == (0, "no-device", [])


def test_a_newer_mellanox_card_is_not_an_mlx4_device(tmp_path: Path) -> None:
    root = host(tmp_path)
    pci_device(root, device="0x1015", driver="mlx5_core", resource=cx3_resource())  # ConnectX-4 Lx
    assert diagnose(root)[1]["status"] == "no-device"


# -- the pure pieces ---------------------------------------------------------------------------------------


def test_bar_assignment_rules() -> None:
    assert Bar(2, 0xF0000000, 0xF1FFFFFF, 0x14220C).assigned
    assert not Bar(2, 0, 0, 0).assigned
    assert not Bar(2, 0, 0x1FFFFFF, 0x14220C).assigned  # start 0
    assert not Bar(2, 0xF0000000, 0xF1FFFFFF, 0x14220C | 0x20000000).assigned  # IORESOURCE_UNSET
    assert not Bar(2, 0xF0000000, 0xF1FFFFFF, 0x101).assigned  # an I/O BAR, not memory


def test_parse_resource_reports_malformed_files() -> None:
    bars, problem = parse_resource(cx3_resource())
    assert len(bars) == 13
    assert problem is None
    assert parse_resource("0x1 0x2\n")[1] == "line 1 has 2 fields, not 3"
    assert "not hexadecimal" in str(parse_resource("zz yy xx\n")[1])
    assert "only 1 lines" in str(parse_resource(EMPTY_BAR + "\n")[1])


@pytest.mark.parametrize(
    "line",
    [
        "[    2.365098] mlx4_core 0000:01:00.0: Missing UAR, aborting",
        "[    2.365098] mlx4_core 0000:01:00.0: Missing UAR, aborting.",  # older kernels and OFED
        "Nov 25 02:21:00 pve kernel: [    2.365098] mlx4_core 0000:01:00.0: Missing UAR, aborting",
        "[    2.365098] pve kernel: mlx4_core 0000:01:00.0: Missing UAR, aborting",  # journalctl -o short-monotonic
        "2026-11-25T02:21:00+0000 pve kernel: mlx4_core 0000:01:00.0: Missing UAR, aborting",
    ],
)
def test_log_formats(line: str) -> None:
    [found] = [ln for ln in scan_log(line + "\n")[0] if ln.kind == "missing-uar"]
    assert found.address == "0000:01:00.0"
    assert found.text.startswith(("mlx4_core", "pve kernel: mlx4_core"))


def test_log_of_several_boots_is_cut_at_the_last_banner() -> None:
    text = UAR_LOG + "[    0.000000] Linux version 6.8.12-5-pve\n[    2.0] mlx4_core 0000:01:00.0: DMFS high rate\n"
    lines, note = scan_log(text)
    assert not any(ln.kind == "missing-uar" for ln in lines)
    assert "older boots" in note


def test_missing_dcs_with_newer_kernel_detail() -> None:
    [ln] = scan_log("[ 1.0] mlx4_core 0000:01:00.0: Missing DCS, aborting (driver_data: 0x0, pci_resource_flags(pdev, 0):0x0)\n")[
        0
    ]
    assert ln.kind == "missing-dcs"


# -- broken, truncated, missing, unreadable inputs ----------------------------------------------------------


def test_missing_pci_tree_is_an_error_with_exit_1(tmp_path: Path) -> None:
    root = debian_host(tmp_path / "root")
    proc_ = run("diagnose", "--root", str(root))
    assert proc_.returncode == 1
    assert "cannot list the PCI devices" in proc_.stderr
    assert "Traceback" not in proc_.stderr


@pytest.mark.parametrize(
    "breakage",
    [
        "no-resource",
        "truncated-resource",
        "garbage-resource",
        "fifo-resource",
        "no-modules",
        "no-cmdline",
        "binary-log",
        "no-log",
        "garbage-vendor",
        "dangling-driver",
    ],
)
def test_broken_files_give_a_clear_message_never_a_traceback(tmp_path: Path, breakage: str) -> None:
    root = host(
        tmp_path,
        modules=None if breakage == "no-modules" else ("mlx4_core",),
        cmdline=None if breakage == "no-cmdline" else "ro quiet",
    )
    base = pci_device(
        root,
        driver=None if breakage != "dangling-driver" else "gone",
        resource=None if breakage in ("no-resource", "fifo-resource") else cx3_resource(bar2=None),
    )
    if breakage == "truncated-resource":
        (base / "resource").write_text(EMPTY_BAR + "\n0x1 0x2")
    if breakage == "garbage-resource":
        (base / "resource").write_bytes(b"\xff\xfe garbage \x00\n")
    if breakage == "fifo-resource":
        os.mkfifo(base / "resource")
    if breakage == "garbage-vendor":
        (base / "vendor").write_bytes(b"\x00\x01\x02")
    if breakage == "binary-log":
        kernel_log(root, "\x00\xff" * 1000 + "\n" + UAR_LOG)
    proc_ = run("diagnose", "--json", "--root", str(root), timeout=30)
    assert proc_.returncode in (0, 10, 12), proc_.stderr
    assert "Traceback" not in proc_.stderr
    doc = DiagnoseResult.model_validate_json(proc_.stdout)
    if breakage in (
        "no-resource",
        "truncated-resource",
        "garbage-resource",
        "fifo-resource",
        "no-modules",
        "no-cmdline",
        "no-log",
    ):
        assert doc.warnings, breakage


def test_a_huge_kernel_log_is_scanned(tmp_path: Path) -> None:
    root = host(tmp_path)
    pci_device(root, driver=None, resource=cx3_resource(bar2=None))
    noise = "".join(f"[ {i}.000000] usb 1-1: new high-speed USB device number {i}\n" for i in range(200_000))
    kernel_log(root, "[    0.000000] Linux version 6.8\n" + noise + UAR_LOG.splitlines()[1] + "\n")
    _, doc = diagnose(root)
    assert any(e.startswith("log") and "Missing UAR" in e for e in device(doc)["evidence"])  # type: ignore[union-attr]


@given(
    resource=st.binary(max_size=400),
    log=st.binary(max_size=2000),
    modules=st.binary(max_size=200),
    cmdline=st.binary(max_size=200),
    vendor=st.sampled_from([b"0x15b3\n", b"0x15B3", b"\xff", b""]),
)
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_fuzzed_facts_never_crash(
    tmp_path_factory: pytest.TempPathFactory, resource: bytes, log: bytes, modules: bytes, cmdline: bytes, vendor: bytes
) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    write(root, "/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    base = pci_device(root, driver=None, resource="")
    (base / "resource").write_bytes(resource)
    (base / "vendor").write_bytes(vendor)
    write(root, "/var/log/dmesg", log)
    write(root, "/proc/modules", modules)
    write(root, "/proc/cmdline", cmdline)
    code, out, err = invoke("diagnose", "--json", "--root", str(root))
    assert code in (0, 10, 11, 12), err
    DiagnoseResult.model_validate_json(out)


# -- verify: a pass must be earned -------------------------------------------------------------------------

HEALTHY_LOG = "[    0.000000] Linux version 6.8.12-4-pve\n[    2.4] mlx4_en: mlx4_core0: Port 1: enp1s0\n"


def healthy_host(tmp_path: Path, cmdline: str = "root=/dev/sda1 ro quiet pci=realloc=off", log: str | None = HEALTHY_LOG) -> Path:
    root = host(tmp_path, cmdline=cmdline, modules=("mlx4_core", "mlx4_en"))
    pci_device(root, driver="mlx4_core", resource=cx3_resource(), net=("enp1s0",))
    if log is not None:
        kernel_log(root, log)
    return root


def verify(root: Path, *args: str) -> tuple[int, VerifyResult]:
    code, out, _ = invoke("verify", "--json", "--root", str(root), *args)
    return code, VerifyResult.model_validate(json_of(out))


def test_verify_passes_a_healthy_fixed_host(tmp_path: Path) -> None:
    code, doc = verify(healthy_host(tmp_path))
    assert (code, doc.ok, doc.failed) == (0, True, [])


def test_verify_fails_without_a_kernel_log_to_rule_out_missing_uar(tmp_path: Path) -> None:
    code, doc = verify(healthy_host(tmp_path, log=None))
    assert (code, doc.failed) == (13, ["log"])
    assert "could not be read" in next(c.detail for c in doc.checks if c.name == "log")


def test_verify_sees_missing_uar_lines_that_name_no_known_device(tmp_path: Path) -> None:
    log = HEALTHY_LOG + "[    2.5] mlx4_core 0000:02:00.0: Missing UAR, aborting\n[    2.6] mlx4_core: Missing DCS, aborting\n"
    code, doc = verify(healthy_host(tmp_path, log=log))
    assert code == 13
    assert doc.failed == ["log"]
    assert "0000:02:00.0" in next(c.detail for c in doc.checks if c.name == "log")
    _, diag = diagnose(healthy_host(tmp_path / "again", log=log))
    assert any("Missing UAR" in line["text"] for line in diag["kernel_log"]["lines"])  # type: ignore[index]


@pytest.mark.parametrize(
    "cmdline",
    [
        "quiet pci=realloc=on pci=realloc=off",
        "quiet pci=realloc=on,realloc=off",
        "pci=realloc=off pci=realloc=off",
        "pci=noaer,realloc=off",
    ],
)
def test_verify_reads_the_command_line_as_the_kernel_does(tmp_path: Path, cmdline: str) -> None:
    assert verify(healthy_host(tmp_path, cmdline=cmdline))[0] == 0


@pytest.mark.parametrize("cmdline", ["quiet pci=realloc=off pci=realloc=on", "quiet pci=realloc", "quiet pci=realloc=0", "quiet"])
def test_verify_fails_when_realloc_is_not_off_in_effect(tmp_path: Path, cmdline: str) -> None:
    code, doc = verify(healthy_host(tmp_path, cmdline=cmdline))
    assert (code, doc.failed) == (13, ["cmdline"])


def test_verify_fails_a_device_whose_bar0_is_missing(tmp_path: Path) -> None:
    root = host(tmp_path, cmdline="quiet pci=realloc=off", modules=("mlx4_core", "vfio_pci"))
    pci_device(root, driver="vfio-pci", override="vfio-pci", resource=cx3_resource(bar0=None))
    kernel_log(root, HEALTHY_LOG)
    code, doc = verify(root)
    assert code == 13
    assert "0000:01:00.0 BAR 0" in doc.failed


def test_an_unused_vf_on_its_host_is_not_a_failure(tmp_path: Path) -> None:
    root = healthy_host(tmp_path)
    vf = pci_device(root, "0000:01:00.1", device="0x1004", driver=None, resource=cx3_resource(bar0=None))
    (vf / "physfn").symlink_to("../0000:01:00.0")
    code, doc = diagnose(root)
    assert (code, doc["status"], device(doc, "0000:01:00.1")["status"]) == (0, "healthy", "healthy")
    assert verify(root)[0] == 0


def test_a_mellanox_device_with_an_unreadable_id_is_reported_not_dropped(tmp_path: Path) -> None:
    root = host(tmp_path)
    base = pci_device(root, driver=None, resource=cx3_resource(bar2=None))
    (base / "device").unlink()
    (base / "device").mkdir()
    kernel_log(root, UAR_LOG)
    code, doc = diagnose(root)
    assert (code, doc["status"]) == (10, "affected")
    assert any("device" in w and "unknown model" in w for w in doc["warnings"])  # type: ignore[union-attr]


def test_ignored_realloc_values_are_flagged(tmp_path: Path) -> None:
    root = host(tmp_path, cmdline="root=/dev/sda1 quiet pci=realloc=0")
    pci_device(root, driver=None, resource=cx3_resource(bar2=None))
    _, doc = diagnose(root)
    assert any("ignores pci=realloc=0" in w for w in doc["warnings"])  # type: ignore[union-attr]


def test_diagnose_names_the_boot_setup_and_its_evidence() -> None:
    _, doc = diagnose(EXAMPLES / "pve-missing-uar")
    setup = doc["boot_setup"]
    assert isinstance(setup, dict)
    assert setup["name"] == "grub-debian"
    assert any("update-grub" in e for e in setup["evidence"])
    _, out, _ = invoke("diagnose", "--root", str(EXAMPLES / "pve-missing-uar"))
    assert "Boot setup: GRUB on Debian" in out


def test_an_empty_kern_log_does_not_hide_the_dmesg_file(tmp_path: Path) -> None:
    root = healthy_host(tmp_path, log=HEALTHY_LOG + "[    2.5] mlx4_core 0000:01:00.0: Missing UAR, aborting\n")
    write(root, "/var/log/kern.log", "")
    assert verify(root)[1].failed == ["log"]


def test_a_kern_log_of_an_earlier_boot_is_called_out(tmp_path: Path) -> None:
    log = "[    0.000000] Linux version 6.8.12-4-pve\n[    0.000000] Command line: root=/dev/sda1 ro quiet\n"
    _, doc = diagnose(healthy_host(tmp_path, log=log))
    assert any("earlier boot" in w for w in doc["warnings"])  # type: ignore[union-attr]


def test_diagnose_and_verify_print_one_json_document_on_errors(tmp_path: Path) -> None:
    for command in ("diagnose", "verify"):
        proc = run(command, "--json", "--root", str(tmp_path))
        assert proc.returncode == 1
        doc = json_of(proc.stdout)
        assert doc["status"] == "error"
        assert doc["errors"]
        assert "Traceback" not in proc.stderr


def test_a_vm_gets_the_host_advice_also_when_pending_or_already_off(tmp_path: Path) -> None:
    pending = host(tmp_path / "pending", cpu_flags="fpu hypervisor sse2")
    write(pending, "/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\n')
    pci_device(pending, device="0x1004", driver=None, resource=cx3_resource(bar0=None, bar2=None))
    code, doc = diagnose(pending)
    assert code == 11
    assert "hypervisor host" in " ".join(doc["advice"])  # type: ignore[arg-type]
    off = host(tmp_path / "off", cpu_flags="fpu hypervisor sse2", cmdline="root=/dev/vda1 pci=realloc=off")
    pci_device(off, device="0x1004", driver=None, resource=cx3_resource(bar0=None, bar2=None))
    advice = " ".join(diagnose(off)[1]["advice"])  # type: ignore[arg-type]
    assert "hypervisor host" in advice
    assert "mstconfig" not in advice  # not against a VF inside the guest


def test_an_affected_host_mlxfix_cannot_edit_is_told_what_to_do_instead(tmp_path: Path) -> None:
    root = host(tmp_path)
    write(root, "/run/ostree-booted", "")
    pci_device(root, driver=None, resource=cx3_resource(bar2=None))
    code, doc = diagnose(root)
    assert code == 10
    advice = " ".join(doc["advice"])  # type: ignore[arg-type]
    assert "rpm-ostree kargs --append-if-missing=pci=realloc=off" in advice
    assert "mlxfix apply --dry-run" not in advice
    assert doc["boot_setup"] is None
    assert "OSTree" in doc["boot_setup_error"]  # type: ignore[operator]


EARLIER_BOOT = (
    "Dec  1 10:00:00 pve kernel: [    0.000000] Linux version 6.8.12-4-pve\n"
    "Dec  1 10:00:00 pve kernel: [    0.000000] Command line: root=/dev/sda1 ro quiet\n"
    "Dec  1 10:00:02 pve kernel: [    2.365098] mlx4_core 0000:01:00.0: Missing UAR, aborting\n"
)


def test_a_kern_log_of_a_boot_without_the_fix_is_not_this_boots_log(tmp_path: Path) -> None:
    """kern.log ends before this boot (syslog not yet flushed): its Missing UAR is the old boot's."""
    root = healthy_host(tmp_path, log=None)
    kernel_log(root, EARLIER_BOOT, "/var/log/kern.log")
    code, doc = verify(root)
    assert (code, doc.failed) == (13, ["log"])  # this boot's log is unknown: not "it says Missing UAR"
    check = next(c for c in doc.checks if c.name == "log")
    assert "earlier boot" in check.detail
    assert "says Missing UAR" not in check.detail
    kernel_log(root, HEALTHY_LOG + "[    0.000000] Command line: root=/dev/sda1 ro quiet pci=realloc=off\n")
    assert verify(root)[0] == 0  # var/log/dmesg is this boot's, and it is clean


def test_a_stale_missing_uar_is_no_evidence_for_this_boot(tmp_path: Path) -> None:
    root = host(tmp_path, cmdline="root=/dev/sda1 ro quiet pci=realloc=off", modules=("mlx4_core",))
    pci_device(root, driver=None)  # no resource file: the BARs are unknown
    kernel_log(root, EARLIER_BOOT, "/var/log/kern.log")
    code, doc = diagnose(root)
    assert code == 12  # other-failure: unbound, BARs unknown, and no log of this boot
    assert doc["status"] != "affected"
    assert not any("already in effect" in a for a in doc["advice"])  # type: ignore[union-attr]


def test_a_truncated_resource_file_is_named_and_what_it_holds_used() -> None:
    five = "".join(cx3_resource().splitlines(keepends=True)[:5])
    bars, problem = parse_resource(five)
    assert len(bars) == 5
    assert "only 5 lines" in str(problem)
    assert parse_resource("".join(cx3_resource().splitlines(keepends=True)[:7]))[1] is None  # no SR-IOV support


@pytest.mark.parametrize(
    ("content", "why"), [(None, "missing"), ("\xff\xfegarbage\n", "not a vendor id"), ("dir", "a directory")]
)
def test_a_device_whose_vendor_cannot_be_read_is_named(tmp_path: Path, content: str | None, why: str) -> None:
    root = host(tmp_path)
    vendor = pci_device(root, driver=None, resource=cx3_resource(bar2=None)) / "vendor"
    vendor.unlink()
    if content == "dir":
        vendor.mkdir()
    elif content is not None:
        vendor.write_text(content)
    code, doc = diagnose(root)
    assert code == 0
    assert any(w.startswith("/sys/bus/pci/devices/0000:01:00.0/vendor: " + why) for w in doc["warnings"])  # type: ignore[union-attr]


def test_proxmox_is_known_from_pveversion_alone(tmp_path: Path) -> None:
    root = host(tmp_path)
    write(root, "/usr/bin/pveversion", "#!/bin/sh\n").chmod(0o755)
    _, doc = diagnose(root)
    assert doc["context"]["proxmox"] == "Proxmox VE (pveversion is installed)"  # type: ignore[index]


def test_the_log_scan_is_linear_on_one_long_line_of_many_matches() -> None:
    """A kernel log line of megabytes full of matches (seen: 5.3 s at 2 MiB when each match searched
    back to the start of the text): twice the size takes about twice the time, and little of it."""
    import time

    def timed(size: int) -> float:
        line = "[ 1.0] " + "mlx4_core BAR 2 " * (size // 16)
        started = time.perf_counter()
        found, _ = scan_log(line + "\n[ 2.0] mlx4_core 0000:01:00.0: Missing UAR, aborting\n")
        took = time.perf_counter() - started
        assert [ln.kind for ln in found][-1] == "missing-uar"
        return took

    small, big = min(timed(1 << 20) for _ in range(3)), min(timed(2 << 20) for _ in range(3))
    assert big < 0.5, f"2 MiB took {big:.2f} s"
    assert big < 4 * small + 0.05, f"1 MiB {small:.3f} s, 2 MiB {big:.3f} s: not linear"
