import GuestMemory
import Synchronization

/// A device on the port-I/O or MMIO bus. `offset` is relative to the base the
/// device was inserted at. The guest is hostile: any width, any offset inside
/// the device's range, at any time, from any vCPU thread. Devices lock their
/// own state (hence Sendable).
public protocol BusDevice: AnyObject, Sendable {
    func read(offset: UInt64, data: UnsafeMutableRawBufferPointer)
    func write(offset: UInt64, data: UnsafeRawBufferPointer)
}

public enum BusError: Error, Equatable, CustomStringConvertible {
    case overlap(base: UInt64, length: UInt64)
    case emptyRange(base: UInt64)
    /// An insert after `Bus.freeze()`: a programming error in the machine
    /// builder (every device is registered before the vCPUs start).
    case frozen(base: UInt64, length: UInt64)

    public var description: String {
        switch self {
        case let .overlap(b, l): return "bus range 0x\(String(b, radix: 16))+0x\(String(l, radix: 16)) overlaps another device"
        case let .emptyRange(b): return "empty bus range at 0x\(String(b, radix: 16))"
        case let .frozen(b, l):
            return "bus range 0x\(String(b, radix: 16))+0x\(String(l, radix: 16)) inserted after the bus was frozen"
        }
    }
}

/// An address space of devices (one for port I/O, one for MMIO), built
/// before the vCPUs start and frozen once the machine is complete.
///
/// Two phases:
/// - **Building**: `insert` adds devices; the entries are behind a `Mutex`,
///   and lookups (`resolve`, `read`, `write`, `entries`) take it too, so a bus
///   that is never frozen stays correct, only slower.
/// - **Frozen**: `freeze()` publishes the sorted entries once, as an immutable
///   table (`AtomicLazyReference`); from then on lookups are one acquiring load
///   and a binary search, with no lock, and `insert` throws `BusError.frozen`
///   without changing anything. `freeze()` is idempotent.
///
/// The machine builder calls `freeze()` on both buses after the last
/// `insert` and before the first vCPU runs.
public final class Bus: Sendable {
    public struct Entry: Sendable {
        public let base: UInt64
        public let length: UInt64
        public let device: BusDevice
        var end: UInt64 { base &+ length } // no overflow: checked at insert
    }

    /// The entries once frozen: never mutated after `freeze()` publishes it.
    private final class FrozenTable: Sendable {
        let entries: [Entry]
        init(_ entries: [Entry]) { self.entries = entries }
    }

    /// The entries while building, sorted by base. Left as is by `freeze()`.
    private let building = Mutex<[Entry]>([])
    /// Set once, by `freeze()`, while `building`'s lock is held.
    private let frozen = AtomicLazyReference<FrozenTable>()

    public init() {}

    /// The devices, sorted by base.
    public var entries: [Entry] {
        if let table = frozen.load() { return table.entries }
        return building.withLock { $0 }
    }

    /// Whether `freeze()` was called.
    public var isFrozen: Bool { frozen.load() != nil }

    /// Adds `device` at `[base, base+length)`. Throws on an empty or wrapping
    /// range, an overlap with another device, and after `freeze()`.
    public func insert(_ device: BusDevice, base: UInt64, length: UInt64) throws {
        guard length > 0 else { throw BusError.emptyRange(base: base) }
        let (_, o) = base.addingReportingOverflow(length)
        guard !o else { throw BusError.overlap(base: base, length: length) }
        try building.withLock { entries in
            // Checked under the lock `freeze()` publishes under: no insert can
            // slip in after the table is published.
            guard frozen.load() == nil else { throw BusError.frozen(base: base, length: length) }
            for e in entries where base < e.end && e.base < base + length {
                throw BusError.overlap(base: base, length: length)
            }
            entries.append(Entry(base: base, length: length, device: device))
            entries.sort { $0.base < $1.base }
        }
    }

    /// Ends the building phase: publishes the entries for lock-free lookups;
    /// later inserts throw `BusError.frozen`. Calling it again does nothing.
    public func freeze() {
        building.withLock { entries in
            _ = frozen.storeIfNil(FrozenTable(entries))
        }
    }

    /// The device covering `[address, address+size)` and the offset into it.
    public func resolve(_ address: UInt64, size: Int) -> (BusDevice, UInt64)? {
        if let table = frozen.load() { return Self.resolve(address, size: size, in: table.entries) }
        return building.withLock { Self.resolve(address, size: size, in: $0) }
    }

    private static func resolve(_ address: UInt64, size: Int, in entries: [Entry]) -> (BusDevice, UInt64)? {
        // Binary search for the last entry with base <= address.
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].base <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0, let width = UInt64(exactly: size) else { return nil }
        let e = entries[lo - 1]
        let off = address - e.base
        guard off < e.length, width <= e.length - off else { return nil }
        return (e.device, off)
    }

    /// Dispatches a read; returns false when nothing is there (the caller
    /// then fills the data with 0xff, as an open bus reads). The device is
    /// called outside the bus's lock.
    @discardableResult
    public func read(_ address: UInt64, data: UnsafeMutableRawBufferPointer) -> Bool {
        guard let (d, off) = resolve(address, size: data.count) else { return false }
        d.read(offset: off, data: data)
        return true
    }

    @discardableResult
    public func write(_ address: UInt64, data: UnsafeRawBufferPointer) -> Bool {
        guard let (d, off) = resolve(address, size: data.count) else { return false }
        d.write(offset: off, data: data)
        return true
    }
}

/// A line into the interrupt controller, as devices see it. The VMM backs it
/// with KVM_IRQ_LINE or an irqfd; tests back it with a recorder.
public protocol InterruptLine: AnyObject, Sendable {
    /// Sets the line's level (edge-triggered consumers see the 0->1 transition).
    func setLevel(_ high: Bool)
}

/// Where a console device's output goes (terminal, file, nowhere). Devices
/// write to it from vCPU and I/O threads.
public protocol ConsoleOutput: AnyObject, Sendable {
    func write(_ bytes: [UInt8])
}

/// Machine-level events a device can request of the VMM.
public enum MachineEvent: Equatable, Sendable {
    case reset             // i8042 0xFE, guest `reboot`
    case powerOff          // ACPI S5 or similar
    case bootComplete      // the boot-complete port was written
    case guestVerdict(UInt8) // the guest wrote an exit status
    case guestPanic        // pvpanic
}

/// Receives machine events from devices.
public protocol MachineEventSink: AnyObject, Sendable {
    func machineEvent(_ event: MachineEvent)
}
