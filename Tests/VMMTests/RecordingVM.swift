import Foundation
import HostSys
import KVM
import Logging
import Synchronization

/// A VM that records what the glue asks of it, in order, instead of calling
/// KVM. Eventfds are recorded by fd number. `failing` makes chosen calls
/// throw (after they are recorded, so a test sees what was attempted).
final class RecordingVM: VMInterruptRouting, VMMemorySlots {
    enum Call: Equatable, Sendable, CustomStringConvertible {
        case irqLine(UInt32, level: Bool)
        case gsiRouting([GSIRoute])
        case irqfd(fd: Int32, gsi: UInt32, resample: Int32?)
        case irqfdOff(fd: Int32, gsi: UInt32)
        case ioeventfd(fd: Int32, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?)
        case ioeventfdOff(fd: Int32, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?)
        case memorySlot(UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt64, readOnly: Bool)

        var description: String {
            switch self {
            case let .irqLine(irq, level): return "irqLine(\(irq), \(level))"
            case let .gsiRouting(r): return "gsiRouting(\(r.count) routes, MSI: \(r.filter { if case .msi = $0 { return true }; return false }))"
            case let .irqfd(fd, gsi, resample): return "irqfd(fd \(fd), gsi \(gsi), resample \(resample.map(String.init) ?? "none"))"
            case let .irqfdOff(fd, gsi): return "irqfdOff(fd \(fd), gsi \(gsi))"
            case let .ioeventfd(fd, a, l, pio, d): return "ioeventfd(fd \(fd), 0x\(String(a, radix: 16)), \(l), pio \(pio), \(d.map { String($0) } ?? "any"))"
            case let .ioeventfdOff(fd, a, l, pio, d): return "ioeventfdOff(fd \(fd), 0x\(String(a, radix: 16)), \(l), pio \(pio), \(d.map { String($0) } ?? "any"))"
            case let .memorySlot(s, g, size, h, ro): return "memorySlot(\(s), 0x\(String(g, radix: 16)), 0x\(String(size, radix: 16)), host 0x\(String(h, radix: 16)), ro \(ro))"
            }
        }
    }

    struct Refused: Error, CustomStringConvertible {
        let call: Call
        var description: String { "refused \(call)" }
    }

    private struct State {
        var recorded: [Call] = []
        var failing: @Sendable (Call) -> Bool = { _ in false }
    }
    private let state = Mutex(State())

    /// Calls for which this returns true throw `Refused`.
    var failing: @Sendable (Call) -> Bool {
        get { state.withLock { $0.failing } }
        set { state.withLock { $0.failing = newValue } }
    }

    /// Every call so far.
    var calls: [Call] { state.withLock { $0.recorded } }

    /// The calls since the last `take()`, which forgets them.
    func take() -> [Call] {
        state.withLock { s in
            defer { s.recorded = [] }
            return s.recorded
        }
    }

    private func record(_ c: Call) throws {
        let fail = state.withLock { s in
            s.recorded.append(c)
            return s.failing
        }
        if fail(c) { throw Refused(call: c) }
    }

    func setIRQLine(_ irq: UInt32, level: Bool) throws { try record(.irqLine(irq, level: level)) }
    func setGSIRouting(_ routes: [GSIRoute]) throws { try record(.gsiRouting(routes)) }
    func registerIRQFD(_ event: EventFD, gsi: UInt32, resample: EventFD?) throws {
        try record(.irqfd(fd: event.fd.raw, gsi: gsi, resample: resample?.fd.raw))
    }
    func unregisterIRQFD(_ event: EventFD, gsi: UInt32) throws { try record(.irqfdOff(fd: event.fd.raw, gsi: gsi)) }
    func registerIOEventFD(_ event: EventFD, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?) throws {
        try record(.ioeventfd(fd: event.fd.raw, address: address, length: length, pio: pio, datamatch: datamatch))
    }
    func unregisterIOEventFD(_ event: EventFD, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?) throws {
        try record(.ioeventfdOff(fd: event.fd.raw, address: address, length: length, pio: pio, datamatch: datamatch))
    }
    func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt64, readOnly: Bool) throws {
        try record(.memorySlot(slot, guestAddress: guestAddress, size: size, hostAddress: hostAddress, readOnly: readOnly))
    }
}

/// A logger whose messages a test can read back ("level: message").
final class RecordingLog: Sendable {
    private let lines = Mutex<[String]>([])

    var messages: [String] { lines.withLock { $0 } }

    func append(_ s: String) { lines.withLock { $0.append(s) } }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: RecordingLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            log.append("\(event.level): \(event.message)")
        }
    }
}
