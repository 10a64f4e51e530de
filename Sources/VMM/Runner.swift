import Bits
import Boot
import Devices
import Dispatch
import FoundationEssentials
import HostSys
import KVM
import Logging
import Synchronization
import Virtio
import VMConfig

/// The result of `swiftvmm run`.
public struct RunOutcome {
    public let reason: StopReason
    public let exitStatus: Int32
    public let wallSeconds: Double
    public let bootCompleteSeconds: Double?
    public let firstRunSeconds: Double?
    public let peakRSSBytes: UInt64
    /// Peak of RssAnon + RssFile, sampled every 50 ms: the VMM without guest RAM.
    public let peakVMMRSSBytes: UInt64
    public let consoleTail: [UInt8]
}

extension RunOutcome {
    /// Failures where the console tail helps the user (timeouts, panics, crashes).
    public var showsConsoleTail: Bool {
        switch reason {
        case .timeout, .guestPanic, .tripleFault, .kvmInternalError, .guestHalted, .failPatternMatched: return true
        default: return false
        }
    }

    public func report(config: VMConfig, version: String) -> RunReport {
        RunReport(exitReason: reason.description, exitReasonKind: reason.kind, exitStatus: exitStatus,
                  bootCompleteSeconds: bootCompleteSeconds, firstKVMRunSeconds: firstRunSeconds,
                  wallSeconds: wallSeconds, vmmPeakRSSBytes: peakVMMRSSBytes, totalPeakRSSBytes: peakRSSBytes, kernel: config.kernelPath,
                  initramfs: config.initramfsPath, cmdline: config.cmdline, config: config.configPath,
                  vcpus: config.vcpus, memoryBytes: config.memoryBytes,
                  consoleTail: String(decoding: consoleTail.suffix(4096), as: UTF8.self), swiftvmmVersion: version)
    }
}

/// Builds a machine from a config, runs it to the end and tears it down.
public enum VMMRunner {
    /// Runs the VM described by `config`. Never throws: every failure becomes an outcome.
    public static func run(config: VMConfig, options: RunOptions, clock: RunClock, logger: Logger) -> RunOutcome {
        HostThreads.quietDispatchLog()
        let latch = StopLatch()
        let panic = PanicTracker(latch: latch)
        var sinks: [ConsoleOutput] = []
        do {
            if let serial = try FDConsoleOutput.forMode(config.serial) { sinks.append(serial) }
        } catch {
            return failed(.vmmError("serial.path: \(error)"), clock: clock, tail: [], status: ExitStatus.badConfig)
        }
        if let log = options.consoleLog {
            do { sinks.append(FDConsoleOutput(fd: try FileDescriptor.createForWriting(log))) } catch {
                return failed(.vmmError("--console-log: cannot open \(log): \(error)"), clock: clock, tail: [], status: ExitStatus.usage)
            }
        }
        let matcher: ConsoleMatcher
        do { matcher = try ConsoleMatcher(expect: options.expect, failOn: options.failOn, panic: [ConsoleMatcher.linuxPanic]) } catch {
            return failed(.vmmError("\(error)"), clock: clock, tail: [], status: ExitStatus.usage)
        }
        if !matcher.isEmpty {
            sinks.append(ClosureConsoleOutput { chunk in
                guard let m = matcher.feed(chunk) else { return }
                switch m.kind {
                case .expect: latch.stop(.expectMatched(m.pattern))
                case .failOn: latch.stop(.failPatternMatched(m.pattern))
                case .panic: panic.report(viaPVPanic: false)
                }
            })
        }
        let console = TeeConsoleOutput(sinks)

        let machine: Machine
        do {
            machine = try Machine(config: config, console: console, latch: latch, panic: panic, clock: clock,
                                  options: options, logger: logger)
        } catch let e as MachineError {
            return failed(.vmmError(e.description), clock: clock, tail: [], status: status(of: e))
        } catch let e as KVMError {
            let status: Int32
            switch e {
            case .deviceMissing, .permissionDenied, .apiVersion, .missingCapability: status = ExitStatus.hostUnsupported
            default: status = ExitStatus.vmmError
            }
            return failed(.vmmError(e.description), clock: clock, tail: [], status: status)
        } catch {
            return failed(.vmmError("\(error)"), clock: clock, tail: [], status: ExitStatus.vmmError)
        }
        for line in machine.boot.summary.split(separator: "\n") { logger.info("\(line)") }

        // Setup is done: every device node and image is a descriptor the VMM
        // holds, so no privilege is needed any more. Before any thread starts
        // (capabilities are per thread; those started later inherit the drop).
        do {
            let r = try Privileges.dropAll()
            logger.info("\(Self.privilegeLine(r))")
        } catch {
            return failed(.vmmError("giving up privileges after setup: \(error)"), clock: clock, tail: [], status: ExitStatus.vmmError)
        }

        // Stop on SIGINT/SIGTERM.
        let signals = SignalWatcher()
        // SIGTERM asks the guest to power off (ACPI power button) and waits
        // up to `powerOffGrace` seconds; a second SIGTERM, or the grace
        // running out, stops the VM at once.
        let termCount = AtomicCounter()
        signals.on(HostSignal.terminate) {
            if termCount.increment() == 1 {
                do {
                    try machine.pressPowerButton()
                    logger.info("SIGTERM: pressed the ACPI power button; waiting up to \(Int(options.powerOffGrace)) s for the guest to power off (SIGTERM again to stop now)")
                    DispatchQueue.global().asyncAfter(deadline: .now() + options.powerOffGrace) {
                        latch.stop(.signal(HostSignal.terminate))
                    }
                } catch {
                    latch.stop(.signal(HostSignal.terminate))
                }
            } else {
                latch.stop(.signal(HostSignal.terminate))
            }
        }
        signals.on(HostSignal.interrupt) { latch.stop(.signal(HostSignal.interrupt)) }

        // Timeout.
        if let t = options.timeoutSeconds ?? config.timeoutSeconds {
            DispatchQueue.global().asyncAfter(deadline: .now() + t) { latch.stop(.timeout(seconds: t)) }
        }

        // Terminal input.
        let interactive = options.interactive ?? StandardStreams.inputIsTerminal
        var terminal: RawTerminal?
        // Keyboard input goes to the virtio console (hvc0) when it is on the
        // terminal, else to the serial port when that is.
        let inputSink: (@Sendable ([UInt8]) -> Int)?
        if case .terminal = config.virtioConsole, let hvc = machine.virtioConsole {
            inputSink = { hvc.enqueueInput($0) }
        } else if case .terminal = config.serial {
            inputSink = { machine.serial.enqueueInput($0) }
        } else {
            inputSink = nil
        }
        if interactive, let sink = inputSink {
            terminal = StandardStreams.rawInputTerminal()
            if terminal != nil { logger.info("console: type Ctrl-A x to quit") }
            startInputThread(sink: sink, latch: latch)
        }

        // Setup is complete: the sandbox goes on, over every thread there is
        // (the console input thread included; the vCPU and I/O threads add
        // their own lists as they start).
        do {
            try Sandbox.configure(options.seccomp)
            try Sandbox.enter(.main)
        } catch {
            terminal?.restore()
            return failed(.vmmError("\(error)"), clock: clock, tail: [], status: ExitStatus.vmmError)
        }
        if options.seccomp != .off {
            let n = Sandbox.Kind.allCases.map { "\($0.rawValue) \(Sandbox.allowlist($0).syscalls.count)" }.joined(separator: ", ")
            logger.info("seccomp: \(options.seccomp.rawValue): every thread filtered (system calls allowed: \(n); ioctl: the \(Sandbox.ioctlsAfterSetup.count) requests SwiftVMM makes after setup)")
        } else {
            logger.warning("seccomp: off: the VMM's threads run without a system call filter")
        }

        // One I/O thread per virtio device (queue notifications; a NIC's TAP).
        machine.pci.notifier.start()
        // The host's requests to give an assigned device back.
        do { try machine.passthrough.startRequestWatch() } catch {
            logger.warning("passthrough: cannot watch for the host's requests to give a device back: \(error)")
        }

        // vCPU threads.
        do { try HostThreads.installKickHandler() } catch {
            stopIOThreads(machine, logger: logger)
            terminal?.restore()
            return failed(.vmmError("\(error)"), clock: clock, tail: [], status: ExitStatus.vmmError)
        }
        var threads: [KickableThread] = []
        for v in machine.vcpus {
            threads.append(KickableThread(name: "vcpu\(v.id)") {
                do { try Sandbox.enter(.vcpu) } catch {
                    latch.stop(.vmmError("vcpu\(v.id): \(error)"))
                    return
                }
                vcpuLoop(v, machine: machine, latch: latch, clock: clock, logger: logger)
            })
        }

        // Sample the VMM's own memory (excluding guest RAM) while the guest runs.
        let rss = RSSSampler()
        rss.start(until: latch)
        let reason = latch.wait()
        for v in machine.vcpus { v.setImmediateExit(true) }
        for t in threads { t.kick() }
        for t in threads { t.join() }
        terminal?.restore()
        reportWhereVCPUsWere(reason, machine: machine, logger: logger)
        // No vCPU runs now, so nothing notifies the devices any more.
        stopIOThreads(machine, logger: logger)
        machine.passthrough.shutdown()
        if let v = machine.viommu {
            logger.info("\(v.summary())")
            v.shutdown(logger: logger)
        }
        for line in machine.pci.diskSummaries() { logger.info("\(line)") }
        if machine.pci.notifier.queueCount > 0 {
            logger.info("virtio: \(machine.pci.notifier.deliveredCount) queue notifications arrived through ioeventfds")
        }

        let outcome = RunOutcome(reason: reason, exitStatus: ExitStatus.of(reason), wallSeconds: clock.elapsed,
                                 bootCompleteSeconds: clock.bootCompleteSeconds, firstRunSeconds: clock.firstRunSeconds,
                                 peakRSSBytes: ProcessStats.peakRSSBytes, peakVMMRSSBytes: rss.peak,
                                 consoleTail: machine.serial.recentOutput)
        return outcome
    }

    /// "privileges: ..." for the log: what was given up, and the memory-lock
    /// limit iommufd's pinning now lives within.
    static func privilegeLine(_ r: Privileges.Report) -> String {
        let names = Privileges.names(r.effectiveBefore)
        var had: String
        switch names.count {
        case 0: had = "held no capability"
        case 1...4: had = "dropped \(names.joined(separator: ", "))"
        default: had = "dropped all \(names.count) capabilities it held"
        }
        had += ", for good (bounding set too), and set no_new_privs"
        let memlock: String
        if r.memlockRaised {
            memlock = "RLIMIT_MEMLOCK raised to unlimited first (CAP_IPC_LOCK had let it pin memory past the limit)"
        } else if let l = r.memlockLimit {
            memlock = "RLIMIT_MEMLOCK \(l >> 20) MiB"
        } else {
            memlock = "RLIMIT_MEMLOCK unlimited"
        }
        var line = "privileges: uid \(r.uid) (euid \(r.euid)) \(had); \(memlock)"
        if r.otherThreads > 0 { line += "; \(r.otherThreads) thread(s) started earlier keep theirs, under the seccomp filter" }
        return line
    }

    /// Stops the devices' I/O threads and joins them, for at most
    /// `VirtioNotifier.stopTimeoutSeconds`; one stuck in its device's I/O is
    /// left to the process exit, with a warning.
    static func stopIOThreads(_ machine: Machine, logger: Logger) {
        let stuck = machine.pci.notifier.stop()
        for name in stuck {
            logger.warning("\(name) did not stop within \(Int(VirtioNotifier.stopTimeoutSeconds)) s (its device is in a host call); leaving it to the exit")
        }
    }

    /// A guest stopped from outside (a timeout, or SIGTERM after the power button
    /// went unanswered) was hung or busy somewhere: say where each vCPU was.
    static func reportWhereVCPUsWere(_ reason: StopReason, machine: Machine, logger: Logger) {
        switch reason {
        case .timeout, .signal(HostSignal.terminate): break
        default: return
        }
        for v in machine.vcpus {
            do {
                let where_ = try v.snapshot().summary
                logger.info("vCPU \(v.id) was at \(where_)")
            } catch {
                logger.info("vCPU \(v.id): its registers could not be read: \(error)")
            }
        }
    }

    /// The exit status of a machine that could not be built.
    static func status(of e: MachineError) -> Int32 {
        switch e {
        case .hostUnsupported: return ExitStatus.hostUnsupported
        case .kernel: return ExitStatus.badConfig
        case .setup: return ExitStatus.vmmError
        case .passthrough: return ExitStatus.hostUnsupported
        }
    }

    static func failed(_ r: StopReason, clock: RunClock, tail: [UInt8], status: Int32) -> RunOutcome {
        RunOutcome(reason: r, exitStatus: status, wallSeconds: clock.elapsed, bootCompleteSeconds: nil,
                   firstRunSeconds: nil, peakRSSBytes: ProcessStats.peakRSSBytes,
                   peakVMMRSSBytes: ProcessStats.rssExcludingSharedBytes, consoleTail: tail)
    }

    /// One vCPU's KVM_RUN loop.
    static func vcpuLoop(_ v: VCPU, machine: Machine, latch: StopLatch, clock: RunClock, logger: Logger) {
        if v.id == 0, let t = clock.markFirstRun() {
            logger.debug("first KVM_RUN \(decimal(t * 1000, digits: 1)) ms after VMM start")
        }
        while !latch.isStopped {
            let exit: VCPUExit
            do { exit = try v.run() } catch {
                latch.stop(.vmmError("\(error)"))
                return
            }
            switch handleExit(exit, vcpu: v.id, pio: machine.pio, mmio: machine.mmio) {
            case .resume: continue
            case let .stop(reason):
                latch.stop(enrich(reason, vcpu: v))
                return
            }
        }
    }

    /// Adds the guest's RIP to crash reasons.
    static func enrich(_ r: StopReason, vcpu: VCPU) -> StopReason {
        switch r {
        case .tripleFault, .kvmInternalError:
            guard let regs = try? vcpu.getRegisters() else { return r }
            return r.withRIP(regs.rip)
        default: return r
        }
    }

    /// Reads the terminal and feeds the UART; Ctrl-A x quits.
    static func startInputThread(sink: @escaping @Sendable ([UInt8]) -> Int, latch: StopLatch) {
        _ = KickableThread(name: "console-input") {
            let stdin = StandardStreams.duplicateInput()
            var sawCtrlA = false
            while !latch.isStopped {
                guard let chunk = try? stdin.read(upTo: 64), !chunk.isEmpty else { return }
                var pending: [UInt8] = []
                for b in chunk {
                    if sawCtrlA {
                        sawCtrlA = false
                        if b == UInt8(ascii: "x") { latch.stop(.userQuit); return }
                        pending.append(0x01)
                        if b == 0x01 { continue }
                    } else if b == 0x01 { sawCtrlA = true; continue }
                    pending.append(b)
                }
                while !pending.isEmpty && !latch.isStopped {
                    let n = sink(pending)
                    pending.removeFirst(n)
                    if !pending.isEmpty { sleepMicroseconds(2000) }
                }
            }
        }
    }
}

/// Samples RssAnon + RssFile until the VM stops.
final class RSSSampler: Sendable {
    private let maxBytes = Atomic<UInt64>(ProcessStats.rssExcludingSharedBytes)

    var peak: UInt64 {
        maxBytes.max(ProcessStats.rssExcludingSharedBytes, ordering: .relaxed).newValue
    }

    func start(until latch: StopLatch) {
        _ = KickableThread(name: "rss-sampler") { [self] in
            while !latch.isStopped {
                _ = self.peak
                sleepMicroseconds(50_000)
            }
        }
    }
}

/// A counter shared between threads (signal handlers, tests' hooks).
final class AtomicCounter: Sendable {
    private let value = Atomic<Int>(0)
    /// Adds one; returns the new count.
    func increment() -> Int { value.wrappingAdd(1, ordering: .relaxed).newValue }
    var count: Int { value.load(ordering: .relaxed) }
}
