import Synchronization
import XCTest
@testable import PCI

/// A host device for `AssignedPCIFunction` tests: a 4 KiB config space that
/// stores writes (Status bits are RW1C, as on real hardware), sparse BAR
/// contents, and a log of every call.
final class FakeAssignedBackend: AssignedDeviceBackend {
    private struct State {
        var config = [UInt8](repeating: 0, count: 4096)
        var configWrites: [(offset: Int, bytes: [UInt8])] = []
        var configReads: [(offset: Int, count: Int)] = []
        var barContents: [Int: [UInt64: UInt8]] = [:]
        var barReads: [(index: Int, offset: UInt64, count: Int)] = []
        var barWrites: [(index: Int, offset: UInt64, bytes: [UInt8])] = []
        var modes: [AssignedInterruptMode] = []
        var sequence: SequenceLog?
    }
    /// The backend methods may be called from several threads at once.
    private let state = Mutex(State())

    var config: [UInt8] {
        get { state.withLock { $0.config } }
        set { state.withLock { $0.config = newValue } }
    }
    var configWrites: [(offset: Int, bytes: [UInt8])] {
        get { state.withLock { $0.configWrites } }
        set { state.withLock { $0.configWrites = newValue } }
    }
    var configReads: [(offset: Int, count: Int)] {
        get { state.withLock { $0.configReads } }
        set { state.withLock { $0.configReads = newValue } }
    }
    var barContents: [Int: [UInt64: UInt8]] {
        get { state.withLock { $0.barContents } }
        set { state.withLock { $0.barContents = newValue } }
    }
    var barReads: [(index: Int, offset: UInt64, count: Int)] {
        get { state.withLock { $0.barReads } }
        set { state.withLock { $0.barReads = newValue } }
    }
    var barWrites: [(index: Int, offset: UInt64, bytes: [UInt8])] {
        get { state.withLock { $0.barWrites } }
        set { state.withLock { $0.barWrites = newValue } }
    }
    var modes: [AssignedInterruptMode] { state.withLock { $0.modes } }
    /// Shared with a `SequenceRouter` to check the order of calls.
    var sequence: SequenceLog? {
        get { state.withLock { $0.sequence } }
        set { state.withLock { $0.sequence = newValue } }
    }

    func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        state.withLock { s in
            s.configReads.append((offset, data.count))
            for i in 0..<data.count {
                let o = offset + i
                data[i] = o >= 0 && o < s.config.count ? s.config[o] : 0xFF
            }
        }
    }

    func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {
        state.withLock { s in
            s.configWrites.append((offset, Array(data)))
            for i in 0..<data.count {
                let o = offset + i
                guard o >= 0, o < s.config.count else { continue }
                if o == PCIReg.status || o == PCIReg.status + 1 {
                    s.config[o] &= ~data[i] // RW1C
                } else {
                    s.config[o] = data[i]
                }
            }
        }
    }

    func readBar(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        state.withLock { s in
            s.barReads.append((index, offset, data.count))
            for i in 0..<data.count { data[i] = s.barContents[index]?[offset + UInt64(i)] ?? 0 }
        }
    }

    func writeBar(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer) {
        state.withLock { s in
            s.barWrites.append((index, offset, Array(data)))
            for i in 0..<data.count { s.barContents[index, default: [:]][offset + UInt64(i)] = data[i] }
        }
    }

    func setInterruptMode(_ mode: AssignedInterruptMode) {
        state.withLock { s in
            s.modes.append(mode)
            s.sequence?.append("mode \(mode)")
        }
    }

    // MARK: Building fake devices

    func set8(_ o: Int, _ v: UInt8) { state.withLock { $0.config[o] = v } }
    func set16(_ o: Int, _ v: UInt16) {
        state.withLock { s in for i in 0..<2 { s.config[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    }
    func set32(_ o: Int, _ v: UInt32) {
        state.withLock { s in for i in 0..<4 { s.config[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    }
    func get16(_ o: Int) -> UInt16 { state.withLock { UInt16($0.config[o]) | UInt16($0.config[o + 1]) << 8 } }
    func get32(_ o: Int) -> UInt32 { UInt32(get16(o)) | UInt32(get16(o + 2)) << 16 }

    /// Offsets of every config byte the guest's writes reached.
    var writtenOffsets: Set<Int> {
        Set(configWrites.flatMap { w in (0..<w.bytes.count).map { w.offset + $0 } })
    }

    /// An Intel 82574L (e1000e) as lspci shows it, with host addresses in
    /// the BARs: BAR0 mem32 128 KiB, BAR1 mem32 128 KiB, BAR2 I/O 32 bytes,
    /// BAR3 mem32 16 KiB (MSI-X table at 0, PBA at 0x2000, 5 vectors),
    /// INTA; capabilities PM 0xC8 -> MSI 0xD0 (64-bit, MMC 3) -> PCIe 0xE0
    /// (v1) -> MSI-X 0xA0, and AER at 0x100.
    static func e1000e() -> FakeAssignedBackend {
        let f = FakeAssignedBackend()
        f.set16(0x00, 0x8086)
        f.set16(0x02, 0x10D3)
        f.set16(0x04, 0x0000)
        f.set16(0x06, 0x0010)          // capability list
        f.set8(0x08, 0x00)             // revision
        f.set8(0x0B, 0x02)             // class 0x020000 (Ethernet)
        f.set8(0x0C, 0x10)             // cache line size
        f.set8(0x0E, 0x80)             // multi-function bit set on the host
        f.set32(0x10, 0xF7C0_0000)     // BAR0 mem32
        f.set32(0x14, 0xF7B0_0000)     // BAR1 mem32
        f.set32(0x18, 0x0000_E001)     // BAR2 I/O
        f.set32(0x1C, 0xF7C2_0000)     // BAR3 mem32
        f.set32(0x28, 0x1234_5678)     // CIS pointer (hidden)
        f.set16(0x2C, 0x8086)
        f.set16(0x2E, 0xA01F)
        f.set32(0x30, 0xF7A0_0001)     // host ROM address (hidden)
        f.set8(0x34, 0xC8)
        f.set8(0x3C, 0x0B)             // host IRQ line (hidden)
        f.set8(0x3D, 0x01)             // INTA
        // PM: PMC 0xC823, PMCSR 0x2008
        f.set8(0xC8, 0x01); f.set8(0xC9, 0xD0); f.set16(0xCA, 0xC823); f.set16(0xCC, 0x2008)
        // MSI 64-bit, Multiple Message Capable 3 (8 vectors), host-programmed registers.
        f.set8(0xD0, 0x05); f.set8(0xD1, 0xE0); f.set16(0xD2, 0x0086)
        f.set32(0xD4, 0xFEE0_100C); f.set32(0xD8, 0); f.set16(0xDC, 0x4041)
        // PCIe v1 endpoint (flags: version 1, type 0).
        f.set8(0xE0, 0x10); f.set8(0xE1, 0xA0); f.set16(0xE2, 0x0001); f.set32(0xE4, 0x0000_8CC1)
        // MSI-X: 5 vectors, Enable and Function Mask set by the host; table BIR 3 @0, PBA BIR 3 @0x2000.
        f.set8(0xA0, 0x11); f.set8(0xA1, 0x00); f.set16(0xA2, 0xC004)
        f.set32(0xA4, 0x0000_0003); f.set32(0xA8, 0x0000_2003)
        f.set8(0xF8, 0x5A)             // a device-specific register outside any capability
        f.set32(0x100, 0x1401_0001)    // AER, next 0x140
        f.set32(0x140, 0x0001_0003)    // DSN
        return f
    }

    static let e1000eBars: [Int: UInt64] = [0: 0x20000, 1: 0x20000, 2: 0x20, 3: 0x4000]

    /// An ivshmem-like device: BAR0 mem32 256 bytes, BAR1 mem32 4 KiB
    /// (MSI-X: 2 vectors, table at 0, PBA at 0x800), BAR2 64-bit
    /// prefetchable 8 GiB; no interrupt pin; MSI-X at 0x40 only.
    static func ivshmem() -> FakeAssignedBackend {
        let f = FakeAssignedBackend()
        f.set16(0x00, 0x1AF4)
        f.set16(0x02, 0x1110)
        f.set16(0x06, 0x0010)
        f.set8(0x0B, 0x05)             // class 0x050000 (RAM)
        f.set32(0x10, 0xFE00_0000)
        f.set32(0x14, 0xFE00_1000)
        f.set32(0x18, 0x0000_000C)     // 64-bit prefetchable, host address 0x38_0000_0000
        f.set32(0x1C, 0x0000_0038)
        f.set8(0x34, 0x40)
        f.set8(0x40, 0x11); f.set8(0x41, 0x00); f.set16(0x42, 0x0001)
        f.set32(0x44, 0x0000_0001); f.set32(0x48, 0x0000_0801)
        return f
    }

    static let ivshmemBars: [Int: UInt64] = [0: 0x100, 1: 0x1000, 2: 8 << 30]
}

/// Records the order of router and backend calls in one list.
final class SequenceLog: Sendable {
    private let entries = Mutex<[String]>([])
    func append(_ entry: String) { entries.withLock { $0.append(entry) } }
    func take() -> [String] {
        entries.withLock { e in
            defer { e = [] }
            return e
        }
    }
}

final class SequenceRouter: MSIRouter {
    let log: SequenceLog
    init(log: SequenceLog) { self.log = log }

    func configure(device: PCIAddress, vector: Int, message: MSIMessage?) {
        log.append("configure \(device) \(vector) \(message.map { "\($0)" } ?? "nil")")
    }

    func signal(device: PCIAddress, vector: Int) {
        log.append("signal \(device) \(vector)")
    }
}
