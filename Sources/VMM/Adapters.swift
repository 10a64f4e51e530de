import Devices
import FoundationEssentials
import HostSys
import KVM
import VMConfig

/// An ISA interrupt line of the in-kernel irqchip, as devices see it.
final class KVMIRQLine: InterruptLine {
    private let vm: any VMInterruptRouting
    let irq: UInt32
    private let onError: @Sendable (String) -> Void

    init(vm: any VMInterruptRouting, irq: UInt32, onError: @escaping @Sendable (String) -> Void) {
        self.vm = vm
        self.irq = irq
        self.onError = onError
    }

    func setLevel(_ high: Bool) {
        do { try vm.setIRQLine(irq, level: high) } catch { onError("IRQ \(irq): \(error)") }
    }
}

/// Console output to a file descriptor (the terminal, or a log file).
final class FDConsoleOutput: ConsoleOutput {
    private let fd: FileDescriptor
    init(fd: FileDescriptor) { self.fd = fd }
    func write(_ bytes: [UInt8]) { try? fd.writeAll(bytes) }
}

extension FDConsoleOutput {
    /// The output a console mode asks for (serial or virtio console): this
    /// terminal, a new file, or none for `.off`. Throws the open error; the
    /// caller names the config key.
    static func forMode(_ mode: SerialConfig) throws -> ConsoleOutput? {
        switch mode {
        case .off: return nil
        case .terminal: return FDConsoleOutput(fd: StandardStreams.duplicateOutput())
        case let .file(path): return FDConsoleOutput(fd: try FileDescriptor.createForWriting(path))
        }
    }
}

/// Console output that goes nowhere.
final class NullConsoleOutput: ConsoleOutput {
    func write(_ bytes: [UInt8]) {}
}

/// Fans console output out to several sinks (terminal, log file, matchers).
final class TeeConsoleOutput: ConsoleOutput {
    private let sinks: [ConsoleOutput]
    init(_ sinks: [ConsoleOutput]) { self.sinks = sinks }
    func write(_ bytes: [UInt8]) { for s in sinks { s.write(bytes) } }
}

/// Calls a closure for each console chunk.
final class ClosureConsoleOutput: ConsoleOutput {
    private let body: @Sendable ([UInt8]) -> Void
    init(_ body: @escaping @Sendable ([UInt8]) -> Void) { self.body = body }
    func write(_ bytes: [UInt8]) { body(bytes) }
}

/// Forwards machine events from devices to a closure.
final class ClosureEventSink: MachineEventSink {
    private let body: @Sendable (MachineEvent) -> Void
    init(_ body: @escaping @Sendable (MachineEvent) -> Void) { self.body = body }
    func machineEvent(_ event: MachineEvent) { body(event) }
}
