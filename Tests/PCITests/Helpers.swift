import Bits
import Devices
import Synchronization
import XCTest
@testable import PCI

/// A device with RAM-like BARs that records BAR accesses.
// @unchecked Sendable: restated from PCIFunction (an open class); this
// subclass keeps all its own state in `recorded`, a Mutex.
final class TestDevice: PCIFunction, @unchecked Sendable {
    private struct Recorded {
        var storage: [Int: [UInt8]] = [:]
        var barLog: [(write: Bool, index: Int, offset: UInt64, count: Int)] = []
        var configWrites: [(offset: Int, count: Int)] = []
        var attachContext: PCIAttachContext?
    }
    private let recorded = Mutex(Recorded())
    static let storageLimit: UInt64 = 0x1_0000

    var storage: [Int: [UInt8]] {
        get { recorded.withLock { $0.storage } }
        set { recorded.withLock { $0.storage = newValue } }
    }
    var barLog: [(write: Bool, index: Int, offset: UInt64, count: Int)] {
        get { recorded.withLock { $0.barLog } }
        set { recorded.withLock { $0.barLog = newValue } }
    }
    var configWrites: [(offset: Int, count: Int)] {
        get { recorded.withLock { $0.configWrites } }
        set { recorded.withLock { $0.configWrites = newValue } }
    }
    var attachContext: PCIAttachContext? { recorded.withLock { $0.attachContext } }

    override init(config: PCIConfigSpace, msix: MSIXConfiguration? = nil, msi: MSIConfiguration? = nil) throws {
        if msix == nil && msi == nil {
            super.init(config: config)
        } else {
            try super.init(config: config, msix: msix, msi: msi)
        }
    }

    override func readBarContents(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        recorded.withLock { r in
            r.barLog.append((false, index, offset, data.count))
            let mem = r.storage[index] ?? []
            for i in 0..<data.count {
                let o = offset < Self.storageLimit ? Int(offset) + i : Int.max
                data[i] = o < mem.count ? mem[o] : 0
            }
        }
    }

    override func writeBarContents(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer) {
        recorded.withLock { r in
            r.barLog.append((true, index, offset, data.count))
            // Only the first 64 KiB of each BAR is backed (a 4 GiB BAR would not fit in a test).
            guard offset < Self.storageLimit else { return }
            var mem = r.storage[index] ?? []
            let end = Int(offset) + data.count
            if mem.count < end { mem += [UInt8](repeating: 0, count: end - mem.count) }
            for i in 0..<data.count { mem[Int(offset) + i] = data[i] }
            r.storage[index] = mem
        }
    }

    override func configDidWrite(offset: Int, count: Int) {
        recorded.withLock { $0.configWrites.append((offset, count)) }
    }

    override func didAttach(_ context: PCIAttachContext) {
        recorded.withLock { $0.attachContext = context }
    }
}

final class RecordingRouter: MSIRouter {
    enum Event: Equatable {
        case configure(PCIAddress, Int, MSIMessage?)
        case signal(PCIAddress, Int)
    }
    private let recorded = Mutex<[Event]>([])
    var events: [Event] { recorded.withLock { $0 } }

    func configure(device: PCIAddress, vector: Int, message: MSIMessage?) {
        recorded.withLock { $0.append(.configure(device, vector, message)) }
    }

    func signal(device: PCIAddress, vector: Int) {
        recorded.withLock { $0.append(.signal(device, vector)) }
    }

    func take() -> [Event] {
        recorded.withLock { e in
            defer { e = [] }
            return e
        }
    }
}

/// What a test's callbacks (the bus's `@Sendable` closures) record, in order.
final class CallbackLog<Element: Sendable>: Sendable {
    private let items = Mutex<[Element]>([])
    func append(_ item: Element) { items.withLock { $0.append(item) } }
    var all: [Element] { items.withLock { $0 } }
}

// Little-endian access helpers for tests.
func read(_ d: BusDevice, _ offset: UInt64, _ width: Int) -> UInt64 {
    var b = [UInt8](repeating: 0xAA, count: width)
    b.withUnsafeMutableBytes { d.read(offset: offset, data: $0) }
    return b.withUnsafeBytes { LE.load($0) }
}

func readBytes(_ d: BusDevice, _ offset: UInt64, _ width: Int) -> [UInt8] {
    var b = [UInt8](repeating: 0xAA, count: width)
    b.withUnsafeMutableBytes { d.read(offset: offset, data: $0) }
    return b
}

func write(_ d: BusDevice, _ offset: UInt64, _ value: UInt64, _ width: Int) {
    let b = LE.bytes(value, count: width)
    b.withUnsafeBytes { d.write(offset: offset, data: $0) }
}

func cfgRead(_ d: PCIDevice, _ offset: Int, _ width: Int) -> UInt64 {
    var b = [UInt8](repeating: 0xAA, count: width)
    b.withUnsafeMutableBytes { d.readConfig(offset: offset, data: $0) }
    return b.withUnsafeBytes { LE.load($0) }
}

func cfgWrite(_ d: PCIDevice, _ offset: Int, _ value: UInt64, _ width: Int) {
    let b = LE.bytes(value, count: width)
    b.withUnsafeBytes { d.writeConfig(offset: offset, data: $0) }
}

func barRead(_ d: PCIDevice, _ index: Int, _ offset: UInt64, _ width: Int) -> UInt64 {
    var b = [UInt8](repeating: 0xAA, count: width)
    b.withUnsafeMutableBytes { d.readBar(index, offset: offset, data: $0) }
    return b.withUnsafeBytes { LE.load($0) }
}

func barWrite(_ d: PCIDevice, _ index: Int, _ offset: UInt64, _ value: UInt64, _ width: Int) {
    let b = LE.bytes(value, count: width)
    b.withUnsafeBytes { d.writeBar(index, offset: offset, data: $0) }
}

/// CONFIG_ADDRESS for bus/device/function/register (PCI 3.0 §3.2.2.3.2).
func cf8(bus: UInt32 = 0, dev: UInt32, fn: UInt32 = 0, reg: UInt32, enable: Bool = true) -> UInt64 {
    UInt64((enable ? 0x8000_0000 : 0) | bus << 16 | dev << 11 | fn << 8 | (reg & 0xFC))
}

/// ECAM offset (PCIe 4.0 §7.2.2).
func ecam(bus: UInt64 = 0, dev: UInt64, fn: UInt64 = 0, reg: UInt64) -> UInt64 {
    bus << 20 | dev << 15 | fn << 12 | reg
}

let testWindows = PCIWindows(
    mmio32: PCIAddressWindow(base: 0xC000_0000, size: 0x2000_0000),
    mmio64: PCIAddressWindow(base: 0x1_0000_0000, size: 0x10_0000_0000),
    io: PCIAddressWindow(base: 0xC000, size: 0x4000),
    ecam: PCIAddressWindow(base: 0xE000_0000, size: 0x10_0000))
