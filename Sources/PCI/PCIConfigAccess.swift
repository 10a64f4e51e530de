import Bits
import Devices
import Synchronization

/// The root bus the config-access devices forward to, held weakly (the bus
/// owns them). It can only be set after the bus exists, so it lives behind
/// a `Mutex` rather than in a `weak let`.
struct WeakRootBus {
    weak var bus: PCIRootBus?
}

/// Configuration mechanism #1 (PCI 3.0 §3.2.2.3.2): CONFIG_ADDRESS at port
/// 0xCF8 and CONFIG_DATA at 0xCFC-0xCFF. Insert at 0xCF8 with length 8.
///
/// - CONFIG_ADDRESS is latched only by a 4-byte write at 0xCF8 and read back
///   only by a 4-byte read there (narrower accesses are ordinary I/O to
///   other registers on a PC; they read all ones and are ignored, except the
///   one below). Bits: 31 enable, 23:16 bus, 15:11 device, 10:8 function,
///   7:2 register; 30:24 and 1:0 read 0.
/// - 0xCF9 (byte access) is the chipset's Reset Control register (Intel ICH
///   datasheets, RST_CNT: bit 1 SYS_RST, bit 2 RST_CPU, bit 3 FULL_RST);
///   Linux's `reboot=pci` writes it (arch/x86/kernel/reboot.c,
///   BOOT_CF9_FORCE). Bits 1-3 read back; a write with RST_CPU set calls
///   `onReset`.
/// - CONFIG_DATA: an access at 0xCFC + n reaches register (CONFIG_ADDRESS &
///   0xFC) + n, at any width that stays inside the DWORD. With the enable
///   bit clear, or for a function that does not exist, reads return all
///   ones and writes are dropped.
public final class PCIConfigIO: BusDevice {
    /// Bits of CONFIG_ADDRESS that hold state (enable, bus, device,
    /// function, register).
    public static let addressMask: UInt32 = 0x80FF_FFFC
    public static let enableBit: UInt32 = 0x8000_0000

    /// Port offset and bits of the Reset Control register (0xCF9).
    public static let resetControlOffset: UInt64 = 1
    public static let resetControlMask: UInt8 = 0x0E // SYS_RST | RST_CPU | FULL_RST
    public static let resetCPU: UInt8 = 0x04         // RST_CPU

    /// The bus this forwards to; set once, by the bus's init.
    var bus: PCIRootBus? {
        get { root.withLock { $0.bus } }
        set { root.withLock { $0.bus = newValue } }
    }
    private let root = Mutex(WeakRootBus())
    private let address = Mutex<UInt32>(0)
    private let resetControl = Mutex<UInt8>(0)
    private let resetHandler = Mutex<(@Sendable () -> Void)?>(nil)

    init() {}

    /// The latched CONFIG_ADDRESS value.
    public var configAddress: UInt32 { address.withLock { $0 } }

    /// Called (with no lock held) when the guest writes RST_CPU to 0xCF9.
    public var onReset: (@Sendable () -> Void)? {
        get { resetHandler.withLock { $0 } }
        set { resetHandler.withLock { $0 = newValue } }
    }

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        if offset < 4 {
            if offset == 0, data.count == 4 {
                LE.store(UInt64(configAddress), data)
            } else if offset == Self.resetControlOffset, data.count == 1 {
                // SAFETY: data.count == 1.
                data[0] = resetControl.withLock { $0 }
            } else {
                fillAllOnes(data)
            }
            return
        }
        guard let (bus, target) = target(offset: offset, count: data.count) else {
            fillAllOnes(data)
            return
        }
        bus.readConfig(bus: target.bus, device: target.device, function: target.function, offset: target.register,
                       data: data)
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        if offset < 4 {
            if offset == 0, data.count == 4 {
                let v = UInt32(truncatingIfNeeded: LE.load(data)) & Self.addressMask
                address.withLock { $0 = v }
            } else if offset == Self.resetControlOffset, data.count == 1 {
                // SAFETY: data.count == 1.
                let v = data[0] & Self.resetControlMask
                resetControl.withLock { $0 = v }
                if v & Self.resetCPU != 0 { onReset?() }
            }
            return
        }
        guard let (bus, target) = target(offset: offset, count: data.count) else { return }
        bus.writeConfig(bus: target.bus, device: target.device, function: target.function, offset: target.register,
                        data: data)
    }

    private struct Target {
        let bus: UInt8, device: UInt8, function: UInt8, register: Int
    }

    /// Decodes CONFIG_ADDRESS for an access at `offset` (4...7) into
    /// CONFIG_DATA, or nil when it is disabled or leaves the DWORD.
    private func target(offset: UInt64, count: Int) -> (PCIRootBus, Target)? {
        guard let root = bus, offset >= 4, offset < 8 else { return nil }
        let byte = Int(offset - 4)
        guard count > 0, count <= 4 - byte else { return nil }
        let a = configAddress
        guard a & Self.enableBit != 0 else { return nil }
        return (root, Target(bus: UInt8(truncatingIfNeeded: a >> 16), device: UInt8(truncatingIfNeeded: a >> 11) & 0x1F,
                             function: UInt8(truncatingIfNeeded: a >> 8) & 0x07, register: Int(a & 0xFC) + byte))
    }
}

/// The Enhanced Configuration Access Mechanism (PCIe 4.0 §7.2.2, Table 7-1):
/// offset bits 27:20 bus, 19:15 device, 14:12 function, 11:0 register. Insert
/// at `windows.ecam.base` with `windows.ecam.size` (1 MiB per bus). Buses
/// other than 0, missing functions, and accesses that cross a function's
/// 4 KiB page read all ones; writes to them are dropped.
public final class PCIConfigMMIO: BusDevice {
    public let ecam: PCIAddressWindow
    /// The bus this forwards to; set once, by the bus's init.
    var bus: PCIRootBus? {
        get { root.withLock { $0.bus } }
        set { root.withLock { $0.bus = newValue } }
    }
    private let root = Mutex(WeakRootBus())

    init(ecam: PCIAddressWindow) {
        self.ecam = ecam
    }

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        guard let (root, t) = decode(offset, data.count) else {
            fillAllOnes(data)
            return
        }
        root.readConfig(bus: t.bus, device: t.device, function: t.function, offset: t.register, data: data)
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        guard let (root, t) = decode(offset, data.count) else { return }
        root.writeConfig(bus: t.bus, device: t.device, function: t.function, offset: t.register, data: data)
    }

    /// Decodes an ECAM offset. The bus number is the offset's bits 27:20;
    /// anything at or above 256 buses (offset >= 256 MiB) is not ECAM.
    static func decode(_ offset: UInt64) -> (bus: UInt8, device: UInt8, function: UInt8, register: Int)? {
        guard offset < 1 << 28 else { return nil }
        return (UInt8(truncatingIfNeeded: offset >> 20), UInt8(truncatingIfNeeded: offset >> 15) & 0x1F,
                UInt8(truncatingIfNeeded: offset >> 12) & 0x07, Int(offset & 0xFFF))
    }

    private func decode(_ offset: UInt64, _ count: Int) -> (PCIRootBus, (bus: UInt8, device: UInt8, function: UInt8, register: Int))? {
        guard let root = bus, count > 0, let t = Self.decode(offset), count <= 0x1000 - t.register else { return nil }
        return (root, t)
    }
}
