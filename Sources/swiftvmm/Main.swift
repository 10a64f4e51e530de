import ArgumentParser
import Bits
import FoundationEssentials
import HostSys
import Logging
import VMConfig
import VMM

let startNanos = ProcessStats.monotonicNanos

@main
struct SwiftVMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftvmm",
        abstract: "A small virtual machine monitor for Linux guests on KVM.",
        discussion: """
            Examples:
              swiftvmm check configs/smoke.toml
              swiftvmm run configs/smoke.toml
              swiftvmm run configs/smoke.toml --timeout 60s --cmdline "console=ttyS0 quiet"
            Exit statuses of `run`: 0 guest powered off or rebooted; N the guest's verdict;
            64 usage; 65 bad config or kernel; 69 host cannot run guests; 70 VMM error;
            121 guest panic; 122 guest crash; 123 failure pattern; 124 timeout.
            """,
        version: SwiftVMMVersion.string,
        subcommands: [Run.self, Check.self, Devices.self]
    )
}

enum SwiftVMMVersion {
    static let string = "0.1.0"
}

func makeLogger(verbose: Bool) -> Logger {
    LoggingSystem.bootstrap { _ in VMMLogHandler(label: "swiftvmm", level: verbose ? .debug : .info) }
    return Logger(label: "swiftvmm")
}

/// Options shared by `run` and `check` that override the config file.
struct Overrides: ParsableArguments {
    @Option(help: "Kernel image (bzImage or ELF vmlinux with a PVH note), overriding kernel.path.")
    var kernel: String?
    @Option(help: "Initramfs, overriding kernel.initramfs.")
    var initramfs: String?
    @Option(help: "Kernel command line, overriding kernel.cmdline.")
    var cmdline: String?
    @Option(help: "Guest memory (e.g. 512M, 2G), overriding machine.memory.")
    var memory: String?
    @Option(help: "Number of vCPUs, overriding machine.vcpus.")
    var vcpus: String?
    @Option(name: .customLong("passthrough"),
            help: ArgumentHelp("Assign a host PCI device (0000:03:00.0, /dev/vfio/devices/vfioN, or fd:N: its cdev opened by a launcher) bound to vfio-pci, after the config's [[passthrough]] entries (repeatable).",
                               valueName: "device"))
    var passthrough: [String] = []
    @Flag(help: "Give the guest a vIOMMU (virtio-iommu, ACPI VIOT), as [viommu] does; every PCI device sits behind it unless its table says iommu = false.")
    var viommu = false
    @Option(name: .customLong("vfio-user"),
            help: ArgumentHelp("Add a PCI device served by another process over vfio-user, the server listening at this socket, with guest RAM passed to it by fd (dma = \"fd\"), after the config's [[vfio_user]] entries (repeatable).",
                               valueName: "socket"))
    var vfioUser: [String] = []

    var configOverrides: ConfigOverrides {
        ConfigOverrides(kernel: kernel, initramfs: initramfs, cmdline: cmdline, memory: memory, vcpus: vcpus,
                        passthrough: passthrough, viommu: viommu, vfioUser: vfioUser)
    }
}

func loadConfig(_ path: String, _ o: Overrides) -> Result<VMConfig, ConfigError> {
    // Overrides replace config values before the file checks, so `--kernel X`
    // works with a config whose own kernel is not built yet.
    ConfigLoader.loadResult(path: path, overrides: o.configOverrides)
}

func printIssues(_ e: ConfigError) {
    StandardStreams.writeError("swiftvmm: invalid configuration:\n")
    for i in e.issues { StandardStreams.writeError("  \(i)\n") }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate a VM config without booting; list every problem.")
    @Argument(help: "The VM config file (TOML).") var config: String
    @OptionGroup var overrides: Overrides

    func run() throws {
        switch loadConfig(config, overrides) {
        case let .failure(e):
            printIssues(e)
            throw ExitCode(ExitStatus.badConfig)
        case let .success(c):
            // The boot files, as run would read and load them, with the key
            // path or option that named each value.
            var keys = BootFilesCheck.KeyPaths()
            if overrides.kernel != nil { keys.kernel = "--kernel" }
            if overrides.initramfs != nil { keys.initramfs = "--initramfs" }
            if overrides.cmdline != nil { keys.cmdline = "--cmdline" }
            if overrides.memory != nil { keys.memory = "--memory" }
            if overrides.vcpus != nil { keys.vcpus = "--vcpus" }
            switch BootFilesCheck.check(c, keys: keys) {
            case let .failure(e):
                printIssues(e)
                throw ExitCode(ExitStatus.badConfig)
            case let .success(boot):
                print("\(config): ok (\(c.vcpus) vCPU, \(c.memoryBytes >> 20) MiB, kernel \(c.kernelPath): \(boot))")
            }
        }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Boot the VM described by a config file; the serial console is this terminal.")
    @Argument(help: "The VM config file (TOML).") var config: String
    @OptionGroup var overrides: Overrides
    @Option(help: "Stop the guest after this long (e.g. 90s, 5m); exit status 124.") var timeout: String?
    @Option(name: .customLong("expect"), help: "Finish with success (0) as soon as the console matches this regex (repeatable).")
    var expect: [String] = []
    @Option(name: .customLong("fail-on"), help: "Finish with failure (123) as soon as the console matches this regex (repeatable), e.g. 'Kernel panic|BUG:|Call Trace'.")
    var failOn: [String] = []
    @Option(name: .customLong("console-log"), help: "Keep the full console output in this file.") var consoleLog: String?
    @Option(help: "Write a JSON summary of the run to this file.") var report: String?
    @Flag(inversion: .prefixedNo, help: "Forward terminal input to the guest (default: when stdin is a terminal).")
    var interactive: Bool?
    @Flag(help: "Try to run even on KVM-PVM hosts, which cannot run stock Linux guests.") var allowPvm = false
    @Option(help: ArgumentHelp("The seccomp sandbox once setup is complete: kill (a call outside a thread's allowlist stops the VMM with SIGSYS, naming it), log (the kernel logs it and it goes ahead) or off. Default: $SWIFTVMM_SECCOMP, else kill.",
                               valueName: "kill|log|off"))
    var seccomp: String = ProcessInfo.processInfo.environment["SWIFTVMM_SECCOMP"] ?? "kill"
    @Option(help: ArgumentHelp("KVM: its device node, or fd:N, a descriptor of /dev/kvm the launcher opened and left open (running without root).",
                               valueName: "path|fd:N"))
    var kvm = "/dev/kvm"
    @Option(help: ArgumentHelp("iommufd, for passthrough: its device node, or fd:N, a descriptor of /dev/iommu the launcher opened and left open.",
                               valueName: "path|fd:N"))
    var iommufd = "/dev/iommu"
    @Flag(name: .shortAndLong, help: "Log debug details.") var verbose = false

    func run() throws {
        let logger = makeLogger(verbose: verbose)
        for (option, value) in [("--kvm", kvm), ("--iommufd", iommufd)] {
            if case let .failure(p)? = PassedDescriptor.parse(value) {
                StandardStreams.writeError("swiftvmm: \(option): \(p)\n")
                throw ExitCode(ExitStatus.usage)
            }
        }
        let cfg: VMConfig
        switch loadConfig(config, overrides) {
        case let .failure(e):
            printIssues(e)
            throw ExitCode(ExitStatus.badConfig)
        case let .success(c): cfg = c
        }
        guard let sandbox = SeccompMode(rawValue: seccomp) else {
            StandardStreams.writeError("swiftvmm: --seccomp: \"\(seccomp)\" is not kill, log or off\n")
            throw ExitCode(ExitStatus.usage)
        }
        var options = RunOptions()
        options.seccomp = sandbox
        options.kvmPath = kvm
        options.iommufdPath = iommufd
        options.allowPVM = allowPvm
        options.expect = expect
        options.failOn = failOn
        options.consoleLog = consoleLog
        options.reportPath = report
        options.interactive = interactive
        options.ramAliasAt4G = ProcessInfo.processInfo.environment["SWIFTVMM_LAB_CR3_ALIAS"] == "1"
        if let t = timeout {
            guard let s = ConfigLoader.parseDuration(t) else {
                StandardStreams.writeError("swiftvmm: --timeout: \"\(t)\" is not a duration (use e.g. 90s, 5m)\n")
                throw ExitCode(ExitStatus.usage)
            }
            options.timeoutSeconds = s
        }
        // The report file is opened now, while the VMM still has its privileges:
        // once setup is done it drops every capability, and root without
        // CAP_DAC_OVERRIDE could no longer create a file in a directory it does not own.
        var reportFile: FileDescriptor?
        if let path = report {
            do { reportFile = try FileDescriptor.createForWriting(path) } catch {
                logger.error("--report: cannot open \(path): \(error)")
                throw ExitCode(ExitStatus.usage)
            }
        }
        let outcome = VMMRunner.run(config: cfg, options: options, clock: RunClock(startNanos: startNanos), logger: logger)
        let line = "\(outcome.reason) (exit status \(outcome.exitStatus), ran \(decimal(outcome.wallSeconds, digits: 2)) s)"
        if outcome.exitStatus == 0 { logger.info("\(line)") } else { logger.error("\(line)") }
        if outcome.showsConsoleTail && !outcome.consoleTail.isEmpty {
            let lines = String(decoding: outcome.consoleTail.filter { $0 != 0x0D }, as: UTF8.self)
                .split(separator: "\n", omittingEmptySubsequences: false).suffix(20)
            StandardStreams.writeError(("swiftvmm: last console lines:\n" + lines.map { "  | " + $0 }.joined(separator: "\n") + "\n"))
        }
        if let path = report, let reportFile {
            do {
                try reportFile.writeAll(Array(try outcome.report(config: cfg, version: SwiftVMMVersion.string).json()))
            } catch {
                logger.error("--report: cannot write \(path): \(error)")
                throw ExitCode(outcome.exitStatus == 0 ? ExitStatus.vmmError : outcome.exitStatus)
            }
        }
        throw ExitCode(outcome.exitStatus)
    }
}
