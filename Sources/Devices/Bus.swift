import GuestMemory

/// A device on the port-I/O or MMIO bus. `offset` is relative to the base the
/// device was inserted at. The guest is hostile: any width, any offset inside
/// the device's range, at any time, from any vCPU thread. Devices lock their
/// own state.
public protocol BusDevice: AnyObject {
    func read(offset: UInt64, data: UnsafeMutableRawBufferPointer)
    func write(offset: UInt64, data: UnsafeRawBufferPointer)
}

public enum BusError: Error, Equatable, CustomStringConvertible {
    case overlap(base: UInt64, length: UInt64)
    case emptyRange(base: UInt64)

    public var description: String {
        switch self {
        case let .overlap(b, l): return "bus range 0x\(String(b, radix: 16))+0x\(String(l, radix: 16)) overlaps another device"
        case let .emptyRange(b): return "empty bus range at 0x\(String(b, radix: 16))"
        }
    }
}

/// An address space of devices (one for port I/O, one for MMIO). Built before
/// the vCPUs start; lookups afterwards are read-only and thread-safe.
public final class Bus: @unchecked Sendable {
    public struct Entry {
        public let base: UInt64
        public let length: UInt64
        public let device: BusDevice
        var end: UInt64 { base &+ length } // no overflow: checked at insert
    }

    public private(set) var entries: [Entry] = []

    public init() {}

    public func insert(_ device: BusDevice, base: UInt64, length: UInt64) throws {
        guard length > 0 else { throw BusError.emptyRange(base: base) }
        let (_, o) = base.addingReportingOverflow(length)
        guard !o else { throw BusError.overlap(base: base, length: length) }
        for e in entries where base < e.end && e.base < base + length {
            throw BusError.overlap(base: base, length: length)
        }
        entries.append(Entry(base: base, length: length, device: device))
        entries.sort { $0.base < $1.base }
    }

    /// The device covering `[address, address+size)` and the offset into it.
    public func resolve(_ address: UInt64, size: Int) -> (BusDevice, UInt64)? {
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
    /// then fills the data with 0xff, as an open bus reads).
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
public protocol InterruptLine: AnyObject {
    /// Sets the line's level (edge-triggered consumers see the 0->1 transition).
    func setLevel(_ high: Bool)
}

/// Where a console device's output goes (terminal, file, nowhere).
public protocol ConsoleOutput: AnyObject {
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
public protocol MachineEventSink: AnyObject {
    func machineEvent(_ event: MachineEvent)
}
