import Bits
import Devices
import Synchronization

/// The host bridge at 00.0: Intel vendor ID with device ID 0x0D57, the ID
/// Cloud Hypervisor gives its virtual PCIe host bridge (its EDK2 port names
/// it CH_VIRT_HOST_DEVICE_ID), class 0x060000 (host bridge). No BARs, no
/// interrupt pin. Linux's `pci_sanity_check` (arch/x86/pci/direct.c) looks
/// for a host bridge class or an Intel/Compaq vendor before trusting
/// CF8/CFC; this one has both.
// @unchecked Sendable: restated from PCIFunction (the compiler asks for it);
// this subclass adds no stored state.
public final class PCIHostBridge: PCIFunction, @unchecked Sendable {
    public static let vendorID: UInt16 = 0x8086
    public static let deviceID: UInt16 = 0x0D57

    public init() {
        super.init(config: .type0(vendorID: Self.vendorID, deviceID: Self.deviceID, classCode: PCIClassCode.hostBridge))
    }
}

/// Bus 0 of segment 0: the host bridge at 00.0 and up to 31 single-function
/// devices at slots 1...31 (function 0). It
/// - assigns BARs at attach time as firmware would (sizing through config
///   space, then `PCIBarAllocator`), writes Interrupt Line and enables I/O
///   and memory decoding (as SeaBIOS's `pci_bios_init_device` does), so
///   Linux keeps the assignment;
/// - serves config accesses from `configIO` (0xCF8-0xCFF) and `configMMIO`
///   (ECAM); functions that do not exist read all ones;
/// - routes BAR accesses from its window routers to whichever BAR decodes
///   the address now, following the guest's reprogramming, and reports
///   every change of a decoded BAR address to `onBarMoved`.
public final class PCIRootBus: Sendable {
    /// Device numbers are 5 bits (PCI 3.0 §3.2.2.3.2).
    public static let slotCount = 32
    public static let configAddressPort: UInt64 = 0xCF8
    public static let configPortCount: UInt64 = 8

    public let windows: PCIWindows
    public let hostBridge: PCIHostBridge
    /// Ports 0xCF8-0xCFF.
    public let configIO: PCIConfigIO
    /// ECAM at `windows.ecam`.
    public let configMMIO: PCIConfigMMIO
    public let mmio32Router: PCIWindowRouter
    public let mmio64Router: PCIWindowRouter
    public let ioRouter: PCIWindowRouter

    private let msiRouter: MSIRouter?
    private let intxLineForGSI: (@Sendable (UInt32) -> InterruptLine)?
    private let routes: PCIRouteTable

    private struct State {
        var slots: [PCIDevice?] = Array(repeating: nil, count: PCIRootBus.slotCount)
        var decoded: [[Int: PCIBarRegion]] = Array(repeating: [:], count: PCIRootBus.slotCount)
        var allocator: PCIBarAllocator
        var sharedLines: [UInt32: SharedINTxLine] = [:]
    }

    private let state: Mutex<State>
    /// Serializes config writes, attach, route refreshes and `onBarMoved`
    /// calls, so the VMM sees BAR moves in the order the guest made them.
    private let configLock = Mutex<Void>(())
    private let barMoved = Mutex<(@Sendable (PCIAddress, Int, UInt64?, UInt64?) -> Void)?>(nil)

    /// - Parameters:
    ///   - windows: where BARs, ECAM and I/O BARs go (`PCIWindows.standard`).
    ///   - msiRouter: receives MSI/MSI-X configuration and signals.
    ///   - intxLine: the VMM's line for an IOAPIC GSI (KVM_IRQ_LINE); called
    ///     once per GSI in use. Without it, devices get no INTx line.
    public init(windows: PCIWindows, msiRouter: MSIRouter? = nil, intxLine: (@Sendable (UInt32) -> InterruptLine)? = nil) {
        self.windows = windows
        self.msiRouter = msiRouter
        self.intxLineForGSI = intxLine
        let table = PCIRouteTable()
        routes = table
        hostBridge = PCIHostBridge()
        var s = State(allocator: PCIBarAllocator(windows: windows))
        s.slots[0] = hostBridge
        state = Mutex(s)
        configIO = PCIConfigIO()
        configMMIO = PCIConfigMMIO(ecam: windows.ecam)
        mmio32Router = PCIWindowRouter(window: windows.mmio32, space: .memory, routes: table)
        mmio64Router = PCIWindowRouter(window: windows.mmio64, space: .memory, routes: table)
        ioRouter = PCIWindowRouter(window: windows.io, space: .io, routes: table)
        configIO.bus = self
        configMMIO.bus = self
        hostBridge.attached(PCIAttachContext(address: PCIAddress(device: 0), msiRouter: nil, intx: nil, intxGSI: nil))
    }

    /// Called with (device, BAR index, old address, new address) whenever a
    /// decoded BAR appears, moves or stops decoding (nil = not decoding:
    /// address 0, Command enable bit clear, ROM disabled). Attach reports each
    /// assigned BAR as (nil -> address). Calls are serialized and made with
    /// no bus lock but the config lock held: the handler must not make config
    /// accesses to this bus.
    public var onBarMoved: (@Sendable (PCIAddress, Int, UInt64?, UInt64?) -> Void)? {
        get { barMoved.withLock { $0 } }
        set { barMoved.withLock { $0 = newValue } }
    }

    /// Inserts the config ports, ECAM and the three window routers into the
    /// VMM's buses.
    public func install(mmioBus: Bus, pioBus: Bus) throws {
        try pioBus.insert(configIO, base: Self.configAddressPort, length: Self.configPortCount)
        try mmioBus.insert(configMMIO, base: windows.ecam.base, length: windows.ecam.size)
        try mmioBus.insert(mmio32Router, base: windows.mmio32.base, length: windows.mmio32.size)
        try mmioBus.insert(mmio64Router, base: windows.mmio64.base, length: windows.mmio64.size)
        try pioBus.insert(ioRouter, base: windows.io.base, length: windows.io.size)
    }

    // MARK: INTx

    /// The IOAPIC GSI slot `slot`'s `pin` is wired to (see `PCIINTxRouting`).
    public func intxGSI(slot: Int, pin: PCIInterruptPin) -> UInt32 {
        PCIINTxRouting.gsi(slot: slot, pin: pin)
    }

    /// The _PRT the DSDT describes: every pin of slots 1...31, so devices
    /// attached later are covered too.
    public var prtEntries: [PCIRoutingEntry] {
        (1..<Self.slotCount).flatMap { slot in
            PCIInterruptPin.allCases.map { PCIRoutingEntry(slot: slot, pin: $0, gsi: intxGSI(slot: slot, pin: $0)) }
        }
    }

    // MARK: Devices

    /// The device at `slot`, if any (slot 0 is the host bridge).
    public func device(at slot: Int) -> PCIDevice? {
        guard slot >= 0, slot < Self.slotCount else { return nil }
        return state.withLock { $0.slots[slot] }
    }

    /// Attaches `device` as function 0 of `slot`, or of the lowest free slot
    /// from 1 up when `slot` is nil, and assigns its BARs. On error nothing
    /// changes (no slot taken, no window space used).
    @discardableResult
    public func attach(_ device: PCIDevice, slot: Int? = nil, placement: [Int: UInt64] = [:]) throws -> PCIAddress {
        try configLock.withLock { _ in try attachLocked(device, slot: slot, placement: placement) }
    }

    /// `placement`: BAR index -> guest address chosen by the user; those BARs
    /// are reserved first, the others allocated around them.
    private func attachLocked(_ device: PCIDevice, slot requested: Int?, placement: [Int: UInt64]) throws -> PCIAddress {
        let slot: Int = try state.withLock { s in
            if let r = requested {
                guard r >= 1, r < Self.slotCount else { throw PCIError.invalidSlot(r) }
                guard s.slots[r] == nil else { throw PCIError.slotInUse(r) }
                return r
            }
            guard let free = (1..<Self.slotCount).first(where: { s.slots[$0] == nil }) else { throw PCIError.busFull }
            return free
        }
        let address = PCIAddress(device: UInt8(slot))

        // Size and place the BARs on a copy of the allocator; commit at the end.
        let bars = Self.probeBars(device)
        var allocator = state.withLock { $0.allocator }
        var placed: [(PCIBarProbe, UInt64)] = []
        for index in placement.keys.sorted() where !bars.contains(where: { $0.index == index }) {
            throw PCIError.invalidPlacement(device: address, bar: index, reason: "it has no BAR \(index) to place")
        }
        for bar in bars {
            guard let at = placement[bar.index] else { continue }
            let kind: PCIBarKind = bar.index == PCIBarRegion.romIndex ? .memory32 : bar.kind
            try allocator.reserve(address: at, size: bar.size, kind: kind, device: address, bar: bar.index)
            placed.append((bar, at))
        }
        for bar in bars where placement[bar.index] == nil {
            let kind: PCIBarKind = bar.index == PCIBarRegion.romIndex ? .memory32 : bar.kind
            let at = try allocator.allocate(size: bar.size, kind: kind, device: address, bar: bar.index)
            placed.append((bar, at))
        }
        var command = Self.read16(device, PCIReg.command)
        for (bar, at) in placed {
            if bar.index == PCIBarRegion.romIndex {
                Self.write32(device, PCIReg.romAddress, UInt32(truncatingIfNeeded: at)) // enable bit left clear
                command |= PCICommand.memory
                continue
            }
            Self.write32(device, PCIReg.bar(bar.index), UInt32(truncatingIfNeeded: at))
            if bar.kind == .memory64 {
                Self.write32(device, PCIReg.bar(bar.index + 1), UInt32(truncatingIfNeeded: at >> 32))
            }
            command |= bar.kind == .io ? PCICommand.io : PCICommand.memory
        }

        // INTx: Interrupt Line = GSI (PCI 3.0 §6.2.4: the value is system
        // specific; on x86 with an IOAPIC Linux uses the _PRT and ignores it).
        var gsi: UInt32?
        var line: InterruptLine?
        if let pin = PCIInterruptPin(rawValue: Self.read8(device, PCIReg.interruptPin)) {
            let g = intxGSI(slot: slot, pin: pin)
            gsi = g
            Self.write8(device, PCIReg.interruptLine, UInt8(truncatingIfNeeded: g))
            if let make = intxLineForGSI {
                let shared: SharedINTxLine = state.withLock { s in
                    if let l = s.sharedLines[g] { return l }
                    let l = SharedINTxLine(line: make(g))
                    s.sharedLines[g] = l
                    return l
                }
                line = INTxSource(shared: shared, id: slot)
            }
        }
        device.attached(PCIAttachContext(address: address, msiRouter: msiRouter, intx: line, intxGSI: gsi))
        Self.write16(device, PCIReg.command, command)

        state.withLock { s in
            s.slots[slot] = device
            s.allocator = allocator
        }
        refreshRoutes(slot: slot)
        return address
    }

    // MARK: Config access (used by PCIConfigIO and PCIConfigMMIO)

    /// A config read of bus/device/function at `offset`. Anything but an
    /// attached function 0 on bus 0 reads all ones (PCI 3.0 §6.1).
    public func readConfig(bus: UInt8, device: UInt8, function: UInt8, offset: Int,
                           data: UnsafeMutableRawBufferPointer) {
        guard let d = lookupFunction(bus: bus, device: device, function: function) else {
            fillAllOnes(data)
            return
        }
        d.readConfig(offset: offset, data: data)
    }

    /// A config write; writes to functions that do not exist are dropped.
    /// Writes that touch Command, a BAR or the ROM BAR re-evaluate the
    /// function's decoded BARs.
    public func writeConfig(bus: UInt8, device: UInt8, function: UInt8, offset: Int,
                            data: UnsafeRawBufferPointer) {
        guard let d = lookupFunction(bus: bus, device: device, function: function) else { return }
        configLock.withLock { _ in
            d.writeConfig(offset: offset, data: data)
            let n = data.count
            if rangesOverlap(offset, n, PCIReg.command, 2) || rangesOverlap(offset, n, PCIReg.bar0, 4 * PCIReg.barCount)
                || rangesOverlap(offset, n, PCIReg.romAddress, 4) {
                refreshRoutes(slot: Int(device))
            }
        }
    }

    private func lookupFunction(bus: UInt8, device: UInt8, function: UInt8) -> PCIDevice? {
        guard bus == 0, function == 0, Int(device) < Self.slotCount else { return nil }
        return state.withLock { $0.slots[Int(device)] }
    }

    /// The BARs of the device at `slot` that decode now.
    public func decodedBars(slot: Int) -> [PCIBarRegion] {
        guard slot >= 0, slot < Self.slotCount else { return [] }
        return state.withLock { $0.decoded[slot].values.sorted { $0.index < $1.index } }
    }

    // MARK: Routing

    /// Recomputes which BARs of `slot` decode, updates the route table and
    /// reports changes. Called with `configLock` held.
    private func refreshRoutes(slot: Int) {
        guard let device = state.withLock({ $0.slots[slot] }) else { return }
        let command = Self.read16(device, PCIReg.command)
        var now: [Int: PCIBarRegion] = [:]
        for r in device.barRegions {
            let enable = r.kind == .io ? PCICommand.io : PCICommand.memory
            if command & enable != 0 { now[r.index] = r }
        }
        let before = state.withLock { s -> [Int: PCIBarRegion] in
            let old = s.decoded[slot]
            s.decoded[slot] = now
            return old
        }
        guard before != now else { return }
        routes.replace(slot: slot, device: device, regions: Array(now.values))
        let address = PCIAddress(device: UInt8(slot))
        let callback = onBarMoved
        for index in Set(before.keys).union(now.keys).sorted() {
            let old = before[index]?.address, new = now[index]?.address
            if old != new { callback?(address, index, old, new) }
        }
    }

    // MARK: Config helpers (host side, through the device's guest interface)

    struct PCIBarProbe {
        let index: Int
        let size: UInt64
        let kind: PCIBarKind
        let prefetchable: Bool
    }

    /// Sizes every BAR and the ROM the way firmware and Linux's
    /// `__pci_read_base` do: save, write all ones, read the mask back,
    /// restore. The size is the lowest set address bit of the mask.
    static func probeBars(_ d: PCIDevice) -> [PCIBarProbe] {
        func size(_ offset: Int, _ ones: UInt32) -> UInt32 {
            let saved = read32(d, offset)
            write32(d, offset, ones)
            let v = read32(d, offset)
            write32(d, offset, saved)
            return v
        }
        func lowestBit(_ mask: UInt64) -> UInt64 { mask & (~mask &+ 1) }

        var out: [PCIBarProbe] = []
        var i = 0
        while i < PCIReg.barCount {
            let off = PCIReg.bar(i)
            let v = size(off, 0xFFFF_FFFF)
            if v == 0 || v == 0xFFFF_FFFF { i += 1; continue }
            if v & PCIBarBits.spaceIO != 0 {
                let s = lowestBit(UInt64(v & PCIBarBits.ioAddressMask))
                if s != 0 { out.append(PCIBarProbe(index: i, size: s, kind: .io, prefetchable: false)) }
                i += 1
                continue
            }
            let prefetchable = v & PCIBarBits.memPrefetch != 0
            if v & PCIBarBits.memTypeMask == PCIBarBits.memType64 {
                guard i + 1 < PCIReg.barCount else { break } // a 64-bit BAR cannot start at BAR 5
                let high = size(PCIReg.bar(i + 1), 0xFFFF_FFFF)
                let s = lowestBit(UInt64(high) << 32 | UInt64(v & PCIBarBits.memAddressMask))
                if s != 0 { out.append(PCIBarProbe(index: i, size: s, kind: .memory64, prefetchable: prefetchable)) }
                i += 2
            } else {
                let s = lowestBit(UInt64(v & PCIBarBits.memAddressMask))
                if s != 0 { out.append(PCIBarProbe(index: i, size: s, kind: .memory32, prefetchable: prefetchable)) }
                i += 1
            }
        }
        let rom = size(PCIReg.romAddress, PCIBarBits.romAddressMask) & PCIBarBits.romAddressMask
        if rom != 0 {
            out.append(PCIBarProbe(index: PCIBarRegion.romIndex, size: lowestBit(UInt64(rom)), kind: .memory32,
                                   prefetchable: false))
        }
        return out
    }

    // SAFETY (these six): each buffer is a local value or array, valid for
    // its closure; the device sees exactly its count.
    static func read8(_ d: PCIDevice, _ offset: Int) -> UInt8 {
        var b: UInt8 = 0xFF
        withUnsafeMutableBytes(of: &b) { d.readConfig(offset: offset, data: $0) }
        return b
    }

    static func read16(_ d: PCIDevice, _ offset: Int) -> UInt16 {
        var b = [UInt8](repeating: 0xFF, count: 2)
        b.withUnsafeMutableBytes { d.readConfig(offset: offset, data: $0) }
        return UInt16(b[0]) | UInt16(b[1]) << 8
    }

    static func read32(_ d: PCIDevice, _ offset: Int) -> UInt32 {
        var b = [UInt8](repeating: 0xFF, count: 4)
        b.withUnsafeMutableBytes { d.readConfig(offset: offset, data: $0) }
        return UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
    }

    static func write8(_ d: PCIDevice, _ offset: Int, _ v: UInt8) {
        withUnsafeBytes(of: v) { d.writeConfig(offset: offset, data: $0) }
    }

    static func write16(_ d: PCIDevice, _ offset: Int, _ v: UInt16) {
        LE.bytes(UInt64(v), count: 2).withUnsafeBytes { d.writeConfig(offset: offset, data: $0) }
    }

    static func write32(_ d: PCIDevice, _ offset: Int, _ v: UInt32) {
        LE.bytes(UInt64(v), count: 4).withUnsafeBytes { d.writeConfig(offset: offset, data: $0) }
    }
}

/// The decoded BARs of all devices, shared by the window routers. Lookups
/// take the lock only to find the target; the device is called after.
final class PCIRouteTable: Sendable {
    struct Route {
        let slot: Int
        let region: PCIBarRegion
        let device: PCIDevice
    }

    private let routes = Mutex<[Route]>([])

    func replace(slot: Int, device: PCIDevice, regions: [PCIBarRegion]) {
        routes.withLock { r in
            r.removeAll { $0.slot == slot }
            r.append(contentsOf: regions.map { Route(slot: slot, region: $0, device: device) })
            r.sort { ($0.slot, $0.region.index) < ($1.slot, $1.region.index) }
        }
    }

    /// The BAR wholly containing `[address, address+count)` in `space`, and
    /// the offset into it. Overlapping BARs (a guest can program them): the
    /// lowest slot, then the lowest BAR index, wins.
    func lookup(_ address: UInt64, count: Int, space: PCIWindowRouter.Space) -> (PCIDevice, Int, UInt64)? {
        guard let n = UInt64(exactly: count) else { return nil }
        return routes.withLock { r in
            for route in r where (route.region.kind == .io) == (space == .io) && route.region.contains(address, count: n) {
                return (route.device, route.region.index, address - route.region.address)
            }
            return nil
        }
    }
}
