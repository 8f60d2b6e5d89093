"""Kernel config lint: what an enclave kernel needs, and what widens its attack surface.

The rules are data (:data:`RULES`): an option, the values it may have, the arches and the
condition it applies under, and why. :func:`lint_config` is a pure function of a parsed
``.config`` (:func:`~eifbuild.toolchain.kernel.parse_config`): it gives *errors* (an option an
enclave kernel cannot boot or attest without) and *warnings* (an option an enclave does not need
that gives an attacker more kernel to work with). A warning may be waived by naming its option
(``[defaults.kernel_build] waive = ["CONFIG_…"]`` in a recipe, or ``--waive`` on the command line);
an error may not, except kexec's: it defeats attestation (a loaded kernel replaces the measured
one while the attestation still shows the launch PCRs), so it is an error a recipe can waive by name.

:data:`APP_RULES` say what an *app kernel* needs for a kind of app (:data:`APP_KINDS`: ``script``,
``network``, ``python``, ``jvm``, …): asked for (``apps``), each option missing for one of the
kinds is a warning naming the kinds that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

from ..arch import ARCHES, Arch
from ..errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping
    from pathlib import Path

Severity = Literal["error", "warning"]
ERROR: Final = "error"
WARNING: Final = "warning"
NSM_MODULE: Final = "drivers/misc/nsm.ko"

_BUILT_IN: Final = frozenset({"y"})
_ON: Final = frozenset({"y", "m"})
_OFF: Final = frozenset({"n"})
_X86_64: Final[frozenset[Arch]] = frozenset({"x86_64"})
_AARCH64: Final[frozenset[Arch]] = frozenset({"aarch64"})
_ALL: Final[frozenset[Arch]] = frozenset(ARCHES)


@dataclass(frozen=True)
class Rule:
    """``option`` must have one of ``allowed`` (an option not in the config counts as ``n``).

    It applies on ``arches``, and only when ``when`` (an option and its values) holds. ``module``:
    when the option is ``m``, the build must output this module (checked when its modules are known).
    """

    option: str
    severity: Severity
    allowed: frozenset[str]
    why: str
    arches: frozenset[Arch] = _ALL
    when: tuple[str, frozenset[str]] | None = None
    module: str | None = None
    apps: frozenset[str] = frozenset()
    waivable: bool = False  # warnings always are; an error only when its rule says so

    def applies(self, config: Mapping[str, str], arch: Arch, apps: Collection[str] = ()) -> bool:
        """It applies on ``arch``, under its condition, and (an app rule) for one of ``apps``."""
        if arch not in self.arches or (self.apps and not self.apps & set(apps)):
            return False
        return self.when is None or value_of(config, self.when[0]) in self.when[1]


def _needs(
    option: str, why: str, *, arches: frozenset[Arch] = _ALL, when: tuple[str, frozenset[str]] | None = None
) -> Rule:
    """An option an enclave kernel needs built in (an error when it is not)."""
    return Rule(option, ERROR, _BUILT_IN, why, arches=arches, when=when)


def _avoid(
    option: str, why: str, *, arches: frozenset[Arch] = _ALL, when: tuple[str, frozenset[str]] | None = None
) -> Rule:
    """An option that widens the attack surface (a warning when it is set)."""
    return Rule(option, WARNING, _OFF, why, arches=arches, when=when, waivable=True)


def _forbid(option: str, why: str) -> Rule:
    """An option that defeats attestation: an error when it is set, waivable only by name."""
    return Rule(option, ERROR, _OFF, why, waivable=True)


RULES: Final[tuple[Rule, ...]] = (
    # -- what an enclave kernel needs (errors) --
    _needs(
        "CONFIG_64BIT", "an x86_64 enclave runs 64-bit code (tinyconfig defaults to 32-bit)", arches=_X86_64
    ),
    _needs("CONFIG_BINFMT_ELF", "init and the app are ELF executables"),
    _needs("CONFIG_BLK_DEV_INITRD", "the EIF's ramdisks reach the kernel as an initramfs"),
    _needs("CONFIG_DEVTMPFS", "init mounts /dev as devtmpfs"),
    _needs("CONFIG_PROC_FS", "init mounts /proc"),
    _needs("CONFIG_SYSFS", "init mounts /sys"),
    _needs("CONFIG_PRINTK", "kernel messages on the console (nitro-cli console, boot failures)"),
    _needs("CONFIG_SERIAL_8250", "the enclave console is ttyS0 (console=ttyS0), an 8250 UART"),
    _needs("CONFIG_SERIAL_8250_CONSOLE", "the kernel console on ttyS0 (console=ttyS0)"),
    _needs("CONFIG_VIRTIO_MMIO", "the enclave's devices are virtio-mmio"),
    _needs(
        "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
        "the devices are announced on the command line (virtio_mmio.device=…)",
    ),
    _needs("CONFIG_VSOCKETS", "vsock: the heartbeat and the only channel to the parent instance"),
    _needs("CONFIG_VIRTIO_VSOCKETS", "vsock over virtio, the enclave's vsock transport"),
    Rule(
        "CONFIG_NSM",
        ERROR,
        _ON,
        "the Nitro Secure Module driver: /dev/nsm, for attestation",
        module=NSM_MODULE,
    ),
    _needs(
        "CONFIG_MODULES",
        "with CONFIG_NSM=m, init loads nsm.ko",
        when=("CONFIG_NSM", frozenset({"m"})),
    ),
    _needs(
        "CONFIG_HW_RANDOM",
        "with CONFIG_NSM=m, nsm.ko needs rng-core built in (init loads nsm.ko alone)",
        when=("CONFIG_NSM", frozenset({"m"})),
    ),
    _needs("CONFIG_ARM_ARCH_TIMER", "the clock: the Arm generic timer", arches=_AARCH64),
    _needs("CONFIG_ARM_PSCI_FW", "CPU bring-up and power-off go through PSCI", arches=_AARCH64),
    # -- what widens the attack surface (warnings) --
    _avoid(
        "CONFIG_MODULES",
        "module loading: with NSM built in nothing needs it, and a module is unmeasured kernel code",
        when=("CONFIG_NSM", _BUILT_IN),
    ),
    # -- what defeats attestation (errors a recipe may still waive by name) --
    _forbid(
        "CONFIG_KEXEC",
        "kexec loads another kernel over the measured one, while attestation still shows the launch PCRs",
    ),
    _forbid(
        "CONFIG_KEXEC_FILE",
        "kexec_file_load loads another kernel over the measured one, while attestation still shows "
        "the launch PCRs",
    ),
    _avoid("CONFIG_DEBUG_FS", "debugfs exposes kernel internals as files"),
    _avoid("CONFIG_BPF_SYSCALL", "the bpf() system call (verifier and JIT): a frequent exploit path"),
    _avoid("CONFIG_IO_URING", "io_uring: a large, frequently exploited system call interface"),
    _avoid("CONFIG_USER_NS", "user namespaces open root-only kernel paths to unprivileged code"),
    _avoid("CONFIG_USERFAULTFD", "userfaultfd: a common primitive for kernel race exploits"),
    _avoid("CONFIG_DEVMEM", "/dev/mem: physical memory as a file"),
    _avoid("CONFIG_DEVPORT", "/dev/port: I/O ports as a file", arches=_X86_64),
    _avoid("CONFIG_PROC_KCORE", "/proc/kcore: kernel memory as a file"),
    _avoid("CONFIG_IA32_EMULATION", "a second (32-bit) system call ABI", arches=_X86_64),
    _avoid("CONFIG_COMPAT", "a second (32-bit) system call ABI", arches=_AARCH64),
)

APP_KINDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "script": "`#!` entrypoints: shell scripts, most images' entrypoint scripts",
        "glibc": "programs linked with glibc (most images' C, C++ and Rust programs, and their runtimes)",
        "python": "CPython",
        "node": "Node.js",
        "jvm": "Java and the other JVM languages",
        "go": "Go programs",
        "dotnet": ".NET",
        "network": "servers and clients over TCP/UDP on 127.0.0.1 and ::1 (and vsock-to-TCP proxies)",
        "database": "databases and storage engines (PostgreSQL, MySQL, SQLite, RocksDB)",
        "ipc": "processes sharing memory or message queues (System V IPC, POSIX message queues)",
        "sandbox": "apps confining themselves with seccomp filters (Chromium, OpenSSH, libseccomp users)",
    }
)
ALL_APPS: Final = "all"


def _app(option: str, apps: str, why: str, *, arches: frozenset[Arch] = _ALL) -> Rule:
    """An option the named kinds of app (space-separated; ``all``) need built in."""
    kinds = frozenset(APP_KINDS) if apps == ALL_APPS else frozenset(apps.split())
    return Rule(option, WARNING, _BUILT_IN, why, arches=arches, apps=kinds, waivable=True)


# What an app kernel needs, by kind of app (warnings, only when a kind is asked for).
APP_RULES: Final[tuple[Rule, ...]] = (
    _app(
        "CONFIG_BINFMT_SCRIPT",
        "script python node",
        "`#!` scripts: entrypoint scripts, pip's and npm's console scripts, `#!/usr/bin/env` launchers",
    ),
    _app(
        "CONFIG_SMP",
        "jvm go node dotnet",
        "more than one CPU: without it every thread runs on one CPU, whatever the enclave has "
        "(runtimes size their GC and worker threads by the CPU count)",
    ),
    _app("CONFIG_HIGH_RES_TIMERS", "jvm go node dotnet", "timers and sleeps finer than the scheduler tick"),
    _app("CONFIG_FUTEX", "glibc python node jvm go dotnet", "futex(): every thread library's locks"),
    _app(
        "CONFIG_EPOLL",
        "python node jvm go dotnet network",
        "epoll: event loops (asyncio, libuv, Java NIO, Go's netpoller)",
    ),
    _app("CONFIG_EVENTFD", "node go dotnet", "eventfd: event-loop wake-ups (libuv, Go's netpoller)"),
    _app(
        "CONFIG_ADVISE_SYSCALLS",
        "glibc node jvm go dotnet database",
        "madvise() and fadvise(): allocators and garbage collectors give memory back, databases "
        "hint their reads",
    ),
    _app(
        "CONFIG_RSEQ",
        "glibc",
        "restartable sequences: glibc >= 2.35 registers every thread with rseq() (sched_getcpu)",
    ),
    _app(
        "CONFIG_MEMBARRIER",
        "dotnet jvm",
        "membarrier(): process-wide memory barriers (.NET's FlushProcessWriteBuffers, HotSpot's "
        "UseSystemMemoryBarrier, userspace RCU)",
    ),
    _app(
        "CONFIG_UNIX",
        "python node network",
        "UNIX sockets: socketpair() (multiprocessing, asyncio, libuv's child processes), local servers",
    ),
    _app("CONFIG_INET", "network", "IPv4: TCP and UDP, on 127.0.0.1"),
    _app("CONFIG_IPV6", "network", "IPv6: ::1 and dual-stack sockets (Java and Node listen on ::)"),
    _app(
        "CONFIG_PROC_SYSCTL",
        "network",
        "/proc/sys: net.core.somaxconn and the like, read by Go, Java and servers to size listen backlogs",
    ),
    _app(
        "CONFIG_MULTIUSER",
        "network database",
        "setuid(), setgid(), setgroups(): servers drop root after start-up (nginx, PostgreSQL)",
    ),
    _app("CONFIG_INOTIFY_USER", "node jvm", "inotify: file watching (fs.watch, java.nio's WatchService)"),
    _app("CONFIG_AIO", "database", "Linux native AIO (io_submit): MySQL/InnoDB, RocksDB, ScyllaDB"),
    _app("CONFIG_FILE_LOCKING", "database", "flock() and fcntl() locks: SQLite, PostgreSQL, RocksDB"),
    _app(
        "CONFIG_SYSVIPC",
        "ipc database",
        "System V shared memory, semaphores and message queues (PostgreSQL, Oracle)",
    ),
    _app("CONFIG_POSIX_MQUEUE", "ipc", "POSIX message queues (mq_open)"),
    _app("CONFIG_SECCOMP", "sandbox", "seccomp: a process restricts its own system calls"),
    _app("CONFIG_SECCOMP_FILTER", "sandbox", "seccomp BPF filters (libseccomp, Chromium, OpenSSH's sandbox)"),
    _app(
        "CONFIG_RTC_DRV_PL031",
        ALL_APPS,
        "the time of day at boot: the PL031 RTC (without an RTC the clock starts at 1970, and TLS "
        "certificates and tokens fail to validate)",
        arches=_AARCH64,
    ),
    _app("CONFIG_RTC_HCTOSYS", ALL_APPS, "the system clock set from the RTC at boot", arches=_AARCH64),
)
WAIVABLE: Final = frozenset(rule.option for rule in (*RULES, *APP_RULES) if rule.waivable)


def parse_apps(
    values: Iterable[str], *, path: str | Path | None = None, key: str | None = None
) -> tuple[str, ...]:
    """Kinds of app from ``script,network`` lists (``all``: every kind), in :data:`APP_KINDS` order."""
    named = {name.strip() for value in values for name in value.split(",") if name.strip()}
    if ALL_APPS in named:
        return tuple(APP_KINDS)
    unknown = sorted(named - set(APP_KINDS))
    if unknown:
        msg = f"unknown kind of app {', '.join(unknown)}; kinds: {', '.join(APP_KINDS)} (or {ALL_APPS})"
        raise ConfigError(msg, path=path, key=key)
    return tuple(kind for kind in APP_KINDS if kind in named)


def value_of(config: Mapping[str, str], option: str) -> str:
    """The option's value; ``n`` when the config does not have it."""
    return config.get(option, "n")


def shown_value(value: str) -> str:
    return "not set" if value == "n" else value


@dataclass(frozen=True)
class Finding:
    """One rule the config breaks."""

    severity: Severity
    option: str
    value: str
    wanted: str
    why: str
    apps: tuple[str, ...] = ()  # an app rule's finding: the kinds of app (of those asked) needing it
    waivable: bool = False

    def __str__(self) -> str:
        setting = f"{self.option} is not set" if self.value == "n" else f"{self.option}={self.value}"
        needed = f"needed by {_kinds(self.apps)} apps; " if self.apps else ""
        return f"{setting}: {self.why} ({needed}wanted: {self.wanted})"


@dataclass(frozen=True)
class LintReport:
    """The findings for one config, and what it holds: built-in options, modules, image size."""

    arch: Arch
    findings: tuple[Finding, ...]
    waived: tuple[Finding, ...]
    built_in: int
    modules: int
    image_size: int | None = None
    apps: tuple[str, ...] = ()

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == WARNING)

    @property
    def summary(self) -> str:
        """``N built-in options, M modules, kernel SIZE bytes, for KINDS apps: E errors, W warnings
        (V waived)``."""
        size = f", kernel {self.image_size:,} bytes" if self.image_size is not None else ""
        if self.apps:
            size += f", for {_kinds(self.apps)} apps"
        waived = f" ({len(self.waived)} waived)" if self.waived else ""
        counts = f"{_count(len(self.errors), 'error')}, {_count(len(self.warnings), 'warning')}{waived}"
        return f"{self.built_in} built-in options, {_count(self.modules, 'module')}{size}: {counts}"


def _kinds(apps: tuple[str, ...]) -> str:
    return ALL_APPS if len(apps) == len(APP_KINDS) else ", ".join(apps)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def check_waivers(
    waive: Iterable[str], *, path: str | Path | None = None, key: str | None = None
) -> frozenset[str]:
    """The waived options, each one a warning some rule gives; else a :class:`ConfigError`."""
    waived = frozenset(waive)
    unknown = sorted(waived - WAIVABLE)
    if unknown:
        errors = sorted({r.option for r in RULES if r.severity == ERROR} & set(unknown))
        what = "needed options (errors) cannot be waived" if errors else "no lint warning names them"
        msg = f"cannot waive {', '.join(unknown)}: {what}; waivable: {', '.join(sorted(WAIVABLE))}"
        raise ConfigError(msg, path=path, key=key)
    return waived


def lint_config(
    config: Mapping[str, str],
    arch: Arch,
    *,
    waive: Collection[str] = (),
    modules: Collection[str] | None = None,
    image_size: int | None = None,
    apps: Collection[str] = (),
) -> LintReport:
    """Check a parsed ``.config`` for ``arch`` against :data:`RULES` (and :data:`APP_RULES`).

    ``waive`` names warnings to report as waived; ``modules`` are the module paths the build
    outputs (``None``: unknown, as for a config file alone); ``apps`` are kinds of app
    (:func:`parse_apps`) the kernel must run: what they need is checked too.
    """
    rules = (*RULES, *APP_RULES)
    found = [
        f for rule in rules if rule.applies(config, arch, apps) for f in _check(rule, config, modules, apps)
    ]
    return LintReport(
        arch=arch,
        findings=tuple(f for f in found if not _is_waived(f, waive)),
        waived=tuple(f for f in found if _is_waived(f, waive)),
        built_in=sum(1 for value in config.values() if value == "y"),
        modules=sum(1 for value in config.values() if value == "m"),
        image_size=image_size,
        apps=tuple(kind for kind in APP_KINDS if kind in apps),
    )


def _is_waived(finding: Finding, waive: Collection[str]) -> bool:
    return finding.waivable and finding.option in waive


def _check(
    rule: Rule, config: Mapping[str, str], modules: Collection[str] | None, apps: Collection[str]
) -> list[Finding]:
    value = value_of(config, rule.option)
    if value not in rule.allowed:
        wanted = " or ".join(shown_value(v) for v in sorted(rule.allowed, reverse=True))
        kinds = tuple(kind for kind in APP_KINDS if kind in rule.apps and kind in apps)
        return [Finding(rule.severity, rule.option, value, wanted, rule.why, kinds, rule.waivable)]
    if value == "m" and rule.module is not None and modules is not None and rule.module not in modules:
        why = f"the build must output {rule.module} (add it to the kernel build's modules)"
        return [Finding(rule.severity, rule.option, value, f"y, or m with {rule.module}", why)]
    return []


def config_arch(config: Mapping[str, str]) -> Arch | None:
    """The arch a ``.config`` is for (``CONFIG_X86_64`` / ``CONFIG_ARM64``), if it says."""
    if value_of(config, "CONFIG_ARM64") == "y":
        return "aarch64"
    if value_of(config, "CONFIG_X86_64") == "y" or value_of(config, "CONFIG_X86") == "y":
        return "x86_64"
    return None
